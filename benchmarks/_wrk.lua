-- wrk script for the HTTP benchmarks (driven by benchmarks/_load.py): each wrk thread sends, in order,
-- the raw HTTP requests prepared (and signed) for it before the run, from <dir>/<thread number>.req
-- (requests separated by NUL bytes), counts the answers by status, and when its list is used up goes
-- on with GET /healthz (reported as `exhausted`, so the caller can tell the list was too short).
-- With `cycle` as the second argument the list repeats instead (for /healthz itself).

local threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local dir, mode = args[1], args[2]
   cycle = (mode == "cycle")
   local f = assert(io.open(dir .. "/" .. tid .. ".req", "rb"))
   local data = f:read("*a")
   f:close()
   reqs = {}
   local pos = 1
   while pos <= #data do
      local stop = string.find(data, "\0", pos, true)
      if not stop then break end
      reqs[#reqs + 1] = string.sub(data, pos, stop - 1)
      pos = stop + 1
   end
   sent = 0
   exhausted = 0
   counts = {}
   fallback = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
end

function request()
   sent = sent + 1
   if sent <= #reqs then
      return reqs[sent]
   end
   if cycle then
      return reqs[(sent - 1) % #reqs + 1]
   end
   exhausted = exhausted + 1
   return fallback
end

function response(status, headers, body)
   local key = tostring(status)
   counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests)
   for _, thread in ipairs(threads) do
      local c = thread:get("counts")
      for status, n in pairs(c) do
         io.write(string.format("BENCH status %s %d\n", status, n))
      end
      io.write(string.format("BENCH thread %d sent %d exhausted %d\n",
                             thread:get("tid"), thread:get("sent"), thread:get("exhausted")))
   end
   io.write(string.format("BENCH duration_us %d\n", summary.duration))
   io.write(string.format("BENCH completed %d\n", summary.requests))
   io.write(string.format("BENCH errors %d %d %d %d %d\n", summary.errors.connect, summary.errors.read,
                          summary.errors.write, summary.errors.status, summary.errors.timeout))
   for _, p in ipairs({50, 90, 99}) do
      io.write(string.format("BENCH latency_p%d_us %d\n", p, latency:percentile(p)))
   end
   io.write(string.format("BENCH latency_mean_us %d\n", latency.mean))
end
