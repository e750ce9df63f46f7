-- wrk script: POST a realistic cancel request per call, each with a new request_id (so every decision is
-- made and stored, none is an idempotent replay), cycling through real customers and every reason.
-- Usage: wrk -s bench/requests.lua URL -- <customers.tsv> <api key> <run tag>
local reasons = {"too_expensive", "not_using", "temporary", "technical", "content", "switching", "other"}
local customers = {}
local counter = 0
local thread_id = 0
local key, tag

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  for line in io.lines(args[1]) do
    local cid, plan, price, period, channel = line:match("([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)")
    customers[#customers + 1] = {cid, plan, price, period, channel}
  end
  key, tag = args[2], args[3]
  counter = tid * 1000003
end

function request()
  counter = counter + 1
  local c = customers[(counter % #customers) + 1]
  local body = string.format(
    '{"request_id":"%s-%d-%d","customer_id":"%s","reason":"%s","plan_id":"%s","price":%s,' ..
    '"billing_period":"%s","billing_channel":"%s"}',
    tag, tid, counter, c[1], reasons[(counter % #reasons) + 1], c[2], c[3], c[4], c[5])
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end
