"""The `lessdb` command line: a thin click layer over the `lessdb` Python API."""
