"""Runtime internals: the engine and epoch ticker, the compile cache, raw FFI, generated call
paths and host trampolines, per-Spirit call state, and the async bridge. Private."""
