"""lowbit's one exception: what went wrong, and where (file, tensor or key, byte offset, what was expected)."""


class LowbitError(Exception):
    def __init__(self, message, file="", tensor="", offset=None, expected=""):
        super().__init__(message)
        self.file = file
        self.tensor = tensor
        self.offset = offset
        self.expected = expected
