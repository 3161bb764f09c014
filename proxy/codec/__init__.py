"""Wire codecs, sans-IO: bytes in, events out (HTTP/1.1 over httptools in ``http1``)."""
