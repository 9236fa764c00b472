"""The command's exit codes, and the usage error that ends it with EXIT_USAGE."""

EXIT_OK, EXIT_CALL_FAILED, EXIT_USAGE, EXIT_BAD_FILE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
# What shells report for a command ended by Ctrl-C (128 + SIGINT) or by a closed pipe (SIGPIPE).
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


class UsageError(Exception):
    """Options that make sense alone but not together; the message names the flags."""
