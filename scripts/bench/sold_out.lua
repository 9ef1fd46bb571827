-- wrk script: POST /api/v1/buy for a sold-out product (answered from the local cache).
-- Usage: PRODUCT=2 USER_ID=1 TOKEN=... wrk -t2 -c100 -d10s -s scripts/bench/sold_out.lua http://127.0.0.1:8080
-- One static body (a valid user and token) and no per-request Lua, so wrk runs as fast as it
-- does on /health and the two figures compare the server alone. Run the server with the
-- rate limits off (as bench.sh does), or one user's requests measure the 429 path.
wrk.method = "POST"
wrk.path = "/api/v1/buy"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"product_id":%s,"user_id":"%s","quantity":1,"token":"%s"}',
    os.getenv("PRODUCT") or "2", os.getenv("USER_ID") or "1", os.getenv("TOKEN") or "1.x")

function done(summary, latency, requests)
    io.write(string.format("p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
