def main() -> None:
    print("meshctl")
