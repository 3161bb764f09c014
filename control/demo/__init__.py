"""The demo application `meshctl up` runs: small HTTP services behind meshbus proxies."""
