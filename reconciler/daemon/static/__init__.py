"""The status page's files, shipped in the wheel as package data and served by the daemon."""
