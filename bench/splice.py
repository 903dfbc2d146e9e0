#!/usr/bin/env python3
"""Put a packed bootstrap's payload behind another bootstrap program, without packing again.

Profiling needs the bootstrap built with symbols, but packing at zstd level 19 takes
minutes. The payload does not depend on the program in front of it: the file is
[program][payload][trailer], and the trailer (56 bytes: payload offset and length as
little-endian u64, the header's SHA-256, magic `CPTRAIL1`; bootstrap/src/payload.rs)
is the only part that names where the payload starts. The bootstrap checks the chain
of hashes from there, so a wrong splice fails loudly instead of running something else.

    splice.py PROGRAM PACKED_BOOTSTRAP OUT
"""

import os
import struct
import sys

TRAILER_LEN = 56
MAGIC = b"CPTRAIL1"


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    program, packed, out = sys.argv[1:]
    with open(packed, "rb") as f:
        data = f.read()
    trailer = data[-TRAILER_LEN:]
    if len(data) < TRAILER_LEN or trailer[-8:] != MAGIC:
        sys.exit(f"splice.py: {packed} has no coldpack trailer (format changed?)")
    offset, length = struct.unpack("<QQ", trailer[:16])
    if offset + length != len(data) - TRAILER_LEN:
        sys.exit(f"splice.py: the trailer of {packed} does not add up (format changed?)")
    with open(program, "rb") as f:
        stub = f.read()
    new_trailer = struct.pack("<QQ", len(stub), length) + trailer[16:]
    with open(out + ".tmp", "wb") as f:
        f.write(stub)
        f.write(data[offset:offset + length])
        f.write(new_trailer)
    os.chmod(out + ".tmp", 0o755)
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
