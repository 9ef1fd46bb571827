-- wrk script: POST /api/v1/buy, each request a fresh user with a pre-issued valid token.
-- Usage: TOKENS=tokens.csv PRODUCT=1 THREADS=2 wrk -t2 -c100 -d10s -s scripts/bench/buy.lua http://127.0.0.1:8080
-- tokens.csv comes from `seckill token ACTIVITY --range 1-300000 --out tokens.csv`.
-- Thread k takes lines k, k+THREADS, ..., so no user is used twice.

local counter = 0
local threads = {}

function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    threads[#threads + 1] = thread
end

function init(args)
    local threads = tonumber(os.getenv("THREADS") or "2")
    local product = os.getenv("PRODUCT") or "1"
    bodies = {}
    local i = 0
    for line in io.lines(os.getenv("TOKENS") or "tokens.csv") do
        if i % threads == id then
            local user, token = line:match("^([^,]+),(.+)$")
            bodies[#bodies + 1] = string.format(
                '{"product_id":%s,"user_id":"%s","quantity":1,"token":"%s"}', product, user, token)
        end
        i = i + 1
    end
    next_body = 1
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    local body = bodies[next_body]
    next_body = next_body % #bodies + 1
    return wrk.format(nil, "/api/v1/buy", nil, body)
end

-- Tallies statuses per thread, so "queued" (200) can be told from refusals
-- (409: sold_out or limit_exceeded); done() prints one "status N count" line per status.
statuses = {}
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("statuses") or {}) do
            total[status] = (total[status] or 0) + n
        end
    end
    for status, n in pairs(total) do
        io.write(string.format("status %d %d\n", status, n))
    end
    io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
