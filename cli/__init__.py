"""The `lessdb` command line: thin click skins over `lessdb.Workspace`'s methods (lessdb/api/). A command parses
its flags (generated from the settings where a config declares them), calls the one method of its name and prints
what it returns (text, or `--json`); argument checks live in the settings or the method, never here."""
