"""Redis's instructions per purchase for a reserve script, counted by callgrind (repeatable on
a noisy machine, unlike CPU time). Driven by scripts/bench/script_instr.sh, which runs a
redis-server of its own under valgrind and passes its pid; this client (no dependencies: it
speaks RESP itself) sets the sale up, zeroes callgrind's counters, sends N purchases in
batches of BATCH with 50 calls in flight, and has callgrind dump its counters.

usage: script_instr.py PORT LAYOUT SCRIPT N BATCH VALGRIND_PID
LAYOUT: naive   scripts/bench/naive_deduct.lua, one call per purchase (BATCH ignored)
        current lua/reserve.lua's arguments today (one user id per usual purchase)
        numeric current, with buyers numbered 1..N whose totals live in the product's array
                (src/totals.rs), passed numbered ('#' for E, '#<id>' each) as src/buy.rs does
        plainnum  numeric, with the ids passed as they are (E 0), as before the numbered form
        counts  the arguments before the batch's sizes were dropped (N and M passed first)
        blacklist  current, with a blacklist that holds a user (not one of the buyers)
        two     current, every other purchase of a second product (a batch of two products)
        bucket  lua/bucket_buy.lua's arguments (SCRIPT: that file, lua/lib/bucket_entry.lua is put
                in front of it as src/scripts.rs does), one product in bucket 0 of 4
        token   the arguments before issue 20 (a token key and four values per purchase)
Every layout but naive gets lua/lib/set_probe.lua and lua/lib/totals.lua in front of SCRIPT, as
src/scripts.rs does.
"""
import socket
import subprocess
import sys

port, layout, script, n, batch, vpid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
sock = socket.create_connection(("127.0.0.1", int(port)))
stream = sock.makefile("rb")


def enc(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def read():
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind in b"+:":
        return rest
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    size = int(rest)
    return None if size < 0 else [read() for _ in range(size)]


def cmd(*args):
    sock.sendall(enc(*args))
    return read()


P = "cost:{a:1}"
ACT, ORDERS, BLACK, REVOKED = P + ":activity", P + ":orders", P + ":blacklist", P + ":revoked"
PRODUCT, BOUGHT, TOTALS = P + ":product:1", P + ":bought:1", P + ":totals:1"
PRODUCT2, BOUGHT2, TOTALS2 = P + ":product:2", P + ":bought:2", P + ":totals:2"
# Layout `numeric`: buyers numbered 1..n, their totals in the product's array (src/totals.rs).
users = [str(i + 1) for i in range(n)] if layout in ("numeric", "plainnum") else ["u%d" % i for i in range(n)]
cmd("FLUSHALL")
cmd("HSET", ACT, "id", 1, "status", "online", "start_ms", 0, "end_ms", 99999999999999, "persist_seq", 0)
for key, id in ((PRODUCT, 1), (PRODUCT2, 2)):
    cmd("HSET", key, "id", id, "stock", 100000000, "sold", 0, "total", 100000000, "limit", 1, "max_per_order", 1, "price", "9.99",
        "ids_below", 1 << 24 if layout in ("numeric", "plainnum") else 0)
cmd("SET", "naive:stock", 100000000)
if layout == "blacklist":
    cmd("SADD", BLACK, "nobody")
B = "cost:{a:1:b:0}"
if layout == "bucket":
    cmd("HSET", B + ":gate", "status", "online", "start_ms", 0, "end_ms", 99999999999999, "persist_seq", 0)
    cmd("HSET", B + ":product:1", "id", 1, "stock", 100000000, "sold", 0, "shards", 4, "limit", 1, "max_per_order", 1, "price", "9.99")
if layout == "token":
    for i in range(0, n, 1000):
        sock.sendall(b"".join(enc("SET", P + ":token:" + u, "t") for u in users[i:i + 1000]))
        for _ in users[i:i + 1000]:
            read()
source = open(script).read()
if layout != "naive":
    # As src/scripts.rs loads them (a version that defines its own probe_sets shadows this one).
    source = open("lua/lib/set_probe.lua").read() + open("lua/lib/totals.lua").read() + source
if layout == "bucket":
    source = open("lua/lib/bucket_entry.lua").read() + source
sha = cmd("SCRIPT", "LOAD", source).decode()


def calls(chunk):
    if layout == "naive":
        return [enc("EVALSHA", sha, 2, "naive:bought:" + u, "naive:stock", 1) for u in chunk]
    if layout == "token":
        keys = [ACT, ORDERS, BLACK, PRODUCT, BOUGHT] + [P + ":token:" + u for u in chunk]
        args = [len(chunk), 1, 0, 1]
        for u in chunk:
            args += [1, u, 1, "t"]
    elif layout == "bucket":
        keys = [B + ":orders", B + ":seq", B + ":gate", B + ":blacklist", B + ":revoked", B + ":product:1", B + ":bought:1"]
        args = [1, 0, 1 << 40, len(chunk), 1, 0, 1, 1, 4] + [v for u in chunk for v in (1, u, 1)]
    elif layout == "two":
        keys = [ACT, ORDERS, BLACK, REVOKED, PRODUCT, BOUGHT, TOTALS, PRODUCT2, BOUGHT2, TOTALS2]
        second = list(range(2, len(chunk) + 1, 2))
        args = [0, 1, 2, len(second)] + [v for i in second for v in (i, 2, 1)] + chunk
    elif layout == "numeric":
        keys = [ACT, ORDERS, BLACK, REVOKED, PRODUCT, BOUGHT, TOTALS]
        args = [0, 1, "#"] + ["#" + u for u in chunk]
    else:
        keys = [ACT, ORDERS, BLACK, REVOKED, PRODUCT, BOUGHT, TOTALS]
        args = ([len(chunk), 1] if layout == "counts" else []) + [0, 1, 0] + chunk
    return [enc("EVALSHA", sha, len(keys), *keys, *args)]


messages = []
step = 1 if layout == "naive" else batch
for i in range(0, n, step):
    messages += calls(users[i:i + step])
subprocess.run(["callgrind_control", "-z", vpid], capture_output=True, check=True)
in_flight = 0
for m in messages:
    sock.sendall(m)
    in_flight += 1
    if in_flight >= 50:
        read()
        in_flight -= 1
while in_flight:
    read()
    in_flight -= 1
subprocess.run(["callgrind_control", "-d", vpid], capture_output=True, check=True)
if layout == "naive":
    sold = 100000000 - int(cmd("GET", "naive:stock"))
elif layout == "bucket":
    sold = int(cmd("HGET", B + ":product:1", "sold"))
else:
    sold = int(cmd("HGET", PRODUCT, "sold")) + int(cmd("HGET", PRODUCT2, "sold"))
if int(sold) != n:
    sys.exit("script_instr: %s sold %s of %d" % (script, sold, n))
