# One error base for the whole firmware: every failure the gateway reports carries a
# stable code (what programs match on) and a sentence (what people read).


class PpmidError(Exception):
    def __init__(self, code, message):
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self):
        return self.code + ": " + self.message

    def as_dict(self):
        return {"code": self.code, "message": self.message}
