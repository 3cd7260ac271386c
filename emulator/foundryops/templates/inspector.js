// FoundryOps: jobs with progress, credit accounts, match decisions, callback deliveries, the
// audit trail and the request log.
const SHOWN = 50;
const BASE = "/_emulate/foundryops/";

every_second(async (state) => {
  const [jobs, credits, decisions, deliveries, audit, log] = await Promise.all([
    json(BASE + "jobs"), json(BASE + "credits"), json(BASE + "decisions"),
    json(BASE + "deliveries"), json(BASE + "audit"), json("/_emulate/requests?limit=" + SHOWN),
  ]);
  fill("summary", summaryRows(state.services.foundryops));
  fill("jobs", jobs.jobs.slice(0, SHOWN).map((job) => {
    const total = job.progress.total === null ? "?" : job.progress.total;
    return row([
      job.job_id, job.kind, job.key_id, job.status,
      progressBar(job.progress.percentage, job.progress.processed + " / " + total),
      job.eta_seconds, job.matched, job.created_at, job.error ? job.error.code : "",
    ], { "data-job-id": job.job_id, "data-status": job.status });
  }));
  fill("credits", credits.accounts.map((account) =>
    row([account.account_id, account.mode, account.balance])));
  fill("decisions", decisions.decisions.slice(-SHOWN).reverse().map((d) => row([
    new Date(d.at * 1000).toISOString(), d.request_id, d.key_id, d.snapshot_id, d.profile,
    d.threshold, d.match_count, d.top_score,
  ])));
  fill("deliveries", deliveries.deliveries.slice(-SHOWN).reverse().map((d) => row([
    d.delivery_id, d.job_id, d.url, d.status, d.attempts,
    d.last_status_code === null ? d.last_error : d.last_status_code,
  ])));
  fill("audit", audit.events.slice(-SHOWN).reverse().map((event) => row([
    new Date(event.at * 1000).toISOString(), event.action, event.key_id, event.target,
    event.outcome, event.request_id,
  ])));
  fill("requests", requestRows(log));
});
