-- wrk script: POST /v1/recognize with real PNG bodies, a different image each request.
--
--   ls ../shared/data/captcha_images_v2/*.png > /tmp/pngs.txt
--   wrk -t1 -c16 -d10s -s scripts/wrk_recognize.lua http://127.0.0.1:8000 -- /tmp/pngs.txt
--
-- The argument is a file listing PNG paths, one per line (read once per wrk thread). Ends with
-- one JSON line: requests, seconds, p50/p99/mean/max latency in ms, non-2xx answers and socket
-- errors. wrk is a C load generator (Debian/Ubuntu: apt install wrk), far lighter on the CPU than
-- a Python client: scripts/bench_serve_wrk.py uses it to see the server without its client.
local bodies = {}
local i = 0

function init(args)
  for path in io.lines(args[1]) do
    local f = assert(io.open(path, "rb"))
    bodies[#bodies + 1] = f:read("*all")
    f:close()
  end
  assert(#bodies > 0, "no PNG paths in " .. args[1])
  i = math.random(#bodies)
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/recognize", {["Content-Type"] = "image/png"}, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.2f, "p99_ms": %.2f, "mean_ms": %.2f, ' ..
    '"max_ms": %.2f, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000, e.status,
    e.connect + e.read + e.write + e.timeout))
end
