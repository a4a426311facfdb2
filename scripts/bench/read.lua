-- wrk script for scripts/bench/read: every request reads a random execution of the ids file.
-- wrk <url> -s read.lua -- <ids-file> <mode> <token>, mode one of execution, provenance, list,
-- list-basic (the list's page in the basic view: artifact counts, not artifacts), and settled,
-- settled-list, settled-basic: the same reads of settled executions (scripts/bench/read gives
-- each mode its ids).
-- It prints one line; scripts/bench/read fails the run unless its "non200=" field is 0.
local ids, mode = {}, nil
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  mode = args[2]
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  table.sort(ids)
  if mode:find("list") or mode:find("basic") then
    -- the 50 executions received before a random one (never among the oldest 50: pages are full)
    local page = {}
    for i = 51, #ids do page[#page + 1] = ids[i] end
    ids = page
  end
  math.randomseed(seed * 7919)
end

function request()
  local id = ids[math.random(#ids)]
  local path
  if mode == "execution" or mode == "settled" then
    path = "/v1/executions/" .. id
  elseif mode == "provenance" then
    path = "/v1/executions/" .. id .. "/provenance"
  elseif mode == "list" or mode == "settled-list" then
    path = "/v1/executions?limit=50&cursor=" .. id
  elseif mode == "list-basic" or mode == "settled-basic" then
    path = "/v1/executions?limit=50&view=basic&cursor=" .. id
  else
    error("unknown mode " .. tostring(mode))
  end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local non200 = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "requests=%d throughput=%.0f/s p50=%.2fms p95=%.2fms p99=%.2fms non200=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    non200))
end
