"""The cache's I/O, written once as coroutines (the blocking twins are generated into ``_sync``)."""
