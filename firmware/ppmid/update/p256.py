# ECDSA signature verification on the NIST P-256 curve with SHA-256 (FIPS 186-4), for the
# update manifest. Verification only: the board holds no secret, so nothing here needs to
# run in constant time. Pure Python on the port's big integers (MicroPython and CPython),
# imported only while an update offer is checked and dropped afterwards (~1 s under the
# unix port; docs/update.md has the measured figure and the ESP32 estimate).
#
# Points are Jacobian (X, Y, Z) with x = X/Z^2, y = Y/Z^3 and Z == 0 the point at
# infinity; u1*G + u2*Q is one joint double-and-add over both scalars (Shamir's trick)
# with the three non-zero sums G, Q, G+Q as the table. Inverses are Fermat powers
# (pow(a, m - 2, m)): both moduli are prime, and MicroPython's pow takes no negative
# exponent.
from hashlib import sha256

# the curve (FIPS 186-4 D.1.2.3): y^2 = x^3 - 3x + b over GF(P); N the order of G
P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
GX = 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296
GY = 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5

KEY_BYTES = 65   # uncompressed point: 0x04 || X || Y
SIG_BYTES = 64   # r || s, 32 bytes each, big-endian


def _int(b):
    return int.from_bytes(b, "big")


def on_curve(x, y):
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x - 3 * x + B)) % P == 0


def public_key(raw):
    """(x, y) of an uncompressed SEC1 point (65 bytes), or ValueError."""
    if len(raw) != KEY_BYTES or raw[0] != 4:
        raise ValueError("a P-256 public key is 65 bytes starting 04 (uncompressed point)")
    x, y = _int(raw[1:33]), _int(raw[33:])
    if not on_curve(x, y):
        raise ValueError("the public key is not a point of P-256")
    return x, y


def _double(pt):
    X, Y, Z = pt
    if Z == 0 or Y == 0:
        return (1, 1, 0)
    # a = -3: alpha = 3 (X - Z^2)(X + Z^2)
    delta = Z * Z % P
    gamma = Y * Y % P
    beta = X * gamma % P
    alpha = 3 * (X - delta) * (X + delta) % P
    X3 = (alpha * alpha - 8 * beta) % P
    Z3 = ((Y + Z) * (Y + Z) - gamma - delta) % P
    Y3 = (alpha * (4 * beta - X3) - 8 * gamma * gamma) % P
    return (X3, Y3, Z3)


def _add_affine(pt, x2, y2):
    # pt (Jacobian) + (x2, y2) (affine, not infinity)
    X1, Y1, Z1 = pt
    if Z1 == 0:
        return (x2, y2, 1)
    z1z1 = Z1 * Z1 % P
    u2 = x2 * z1z1 % P
    s2 = y2 * Z1 * z1z1 % P
    h = (u2 - X1) % P
    r = (s2 - Y1) % P
    if h == 0:
        if r == 0:
            return _double(pt)
        return (1, 1, 0)
    hh = h * h % P
    hhh = h * hh % P
    v = X1 * hh % P
    X3 = (r * r - hhh - 2 * v) % P
    Y3 = (r * (v - X3) - Y1 * hhh) % P
    Z3 = Z1 * h % P
    return (X3, Y3, Z3)


def _affine(pt):
    X, Y, Z = pt
    if Z == 0:
        return None
    zi = pow(Z, P - 2, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def verify_digest(key, digest, sig):
    """True when sig (64 bytes r || s) is a valid signature of the 32-byte digest by key
    ((x, y) from public_key()). Any malformed signature is simply not valid."""
    if len(sig) != SIG_BYTES or len(digest) != 32:
        return False
    r, s = _int(sig[:32]), _int(sig[32:])
    if not (0 < r < N and 0 < s < N):
        return False
    e = _int(digest)  # 256-bit hash, 256-bit order: no truncation
    w = pow(s, N - 2, N)
    u1 = e * w % N
    u2 = r * w % N
    qx, qy = key
    gq = _affine(_add_affine((GX, GY, 1), qx, qy))  # None only when Q == -G
    table = (None, (GX, GY), (qx, qy), gq)
    acc = (1, 1, 0)
    for i in range(255, -1, -1):
        acc = _double(acc)
        k = ((u1 >> i) & 1) | (((u2 >> i) & 1) << 1)
        if k:
            t = table[k]
            if t is None:  # G + Q is infinity: adding it changes nothing
                continue
            acc = _add_affine(acc, t[0], t[1])
    xy = _affine(acc)
    return xy is not None and xy[0] % N == r


def verify(key, message, sig):
    """verify_digest over SHA-256(message)."""
    return verify_digest(key, sha256(message).digest(), sig)
