// Talking to the server: JSON in and out, one-line errors, background jobs polled until they end. The token travels
// in the cookie the entry address set (HttpOnly: scripts never see it).

export class ApiError extends Error {
  constructor(status, message, busy = false) {
    super(message);
    this.status = status;
    this.busy = busy;
  }
}

function detail(data, fallback) {
  if (!data || data.detail === undefined) return fallback;
  if (typeof data.detail === "string") return data.detail;
  if (Array.isArray(data.detail)) {
    return data.detail.map((d) => `${(d.loc || []).filter((x) => x !== "body" && x !== "query").join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(data.detail);
}

export async function api(path, { method = "GET", body, raw, headers = {} } = {}) {
  const options = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  } else if (raw !== undefined) {
    options.body = raw;
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new ApiError(0, "the server cannot be reached (stopped?)");
  }
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const why = response.status === 401 ? "the token is missing: open the address `birder-index serve` printed" : response.statusText;
    throw new ApiError(response.status, detail(data, why), Boolean(data && data.busy));
  }
  return data;
}

export function query(params) {
  const out = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") out.set(k, v);
  const text = out.toString();
  return text ? `?${text}` : "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Start a job (a POST answering with it) and poll it; `onProgress(job)` each time; resolves to its result.
export async function runJob(started, onProgress = () => {}) {
  let job = await started;
  let wait = 200;
  onProgress(job);
  while (job.state === "running") {
    await sleep(wait);
    wait = Math.min(1000, wait * 1.5);
    job = await api(`/api/jobs/${job.id}`);
    onProgress(job);
  }
  if (job.state === "failed") throw new ApiError(job.busy ? 409 : 400, job.error, job.busy);
  return job.result;
}
