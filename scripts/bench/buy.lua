-- wrk script: POST /api/v1/buy, each request a fresh user with a pre-issued valid token.
-- Usage: scripts/bench/buy_requests.sh tokens.csv PRODUCT 2 127.0.0.1:8080 /tmp/buys
--        REQUESTS=/tmp/buys wrk -t2 -c100 -d10s -s scripts/bench/buy.lua http://127.0.0.1:8080
-- tokens.csv comes from `seckill token ACTIVITY --range 1-300000 --out tokens.csv`;
-- buy_requests.sh writes thread k's requests into /tmp/buys.k (no user in two files).
-- After the last request of its file a thread starts again from the first.
--
-- The requests are built before wrk starts, and init only reads its file: wrk runs each
-- thread's init before starting that thread, while the threads started before it already
-- count answers, so a slow init would give them a head start. request() cuts the next request
-- out of the file's text: wrk shares the machine's two cores with the server and Redis, and
-- its Lua time is theirs.

local counter = 0

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
end

local find, sub = string.find, string.sub

function init(args)
    local path = (os.getenv("REQUESTS") or "requests") .. "." .. id
    local file = assert(io.open(path, "rb"))
    text = file:read("*a")
    file:close()
    assert(find(text, "\1", 1, true), path .. " holds no request")
    at = 1
end

function request()
    local stop = find(text, "\1", at, true)
    if not stop then
        at = 1
        stop = find(text, "\1", at, true)
    end
    local r = sub(text, at, stop - 1)
    at = stop + 1
    return r
end

-- No response() callback: it would run Lua for every answer and slow wrk down on a shared
-- machine. bench.sh counts the answers by code from the server's /metrics instead.
function done(summary, latency, requests)
    io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
