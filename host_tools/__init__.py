"""Host-side tools for the PPMID gateway (CPython): the `ppmid` command."""
