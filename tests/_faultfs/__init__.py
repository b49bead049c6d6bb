"""faultfs: a pass-through FUSE filesystem in its own process that counts operations, fails
chosen ones and simulates power loss (daemon.py); mount.py drives it, fixture.py mounts one
per test."""
