// Fabric: workflow runs with progress, jobs, events, providers, organizations, API keys (by
// id, never the key), the audit log and the request log.
function errorText(error) {
  if (error === null || error === undefined) return "";
  return typeof error === "object" ? (error.message || JSON.stringify(error)) : String(error);
}

every_second(async (state) => {
  const [overview, log] = await Promise.all([
    json("/_emulate/fabric/overview"), json("/_emulate/requests?limit=50"),
  ]);
  const view = overview.data;
  fill("summary", summaryRows(state.services.fabric));
  fill("runs", view.runs.map((run) => row([
    run.id, run.workflow_name, run.status,
    progressBar(run.progress.percentage,
      run.progress.completed_tasks + " / " + run.progress.total_tasks),
    run.progress.current_task, run.job_id, run.created_at, errorText(run.error),
  ], { "data-run-id": run.id, "data-status": run.status })));
  fill("jobs", view.jobs.map((job) => row([
    job.id, job.status, job.modality, job.provider_id, job.model, job.estimated_cost_usd,
    job.created_at, errorText(job.error),
  ], { "data-job-id": job.id, "data-status": job.status })));
  fill("events", view.events.map((event) => row([
    event.sequence, event.name, event.organization_id, event.job_id, event.run_id,
    event.node_key, event.timestamp,
  ])));
  fill("providers", view.providers.map((p) => row([
    p.provider_id, p.modality, p.model, p.tier, p.supports_streaming ? "yes" : "no",
    p.healthy ? "healthy" : "unhealthy",
  ])));
  fill("organizations", view.organizations.map((org) =>
    row([org.id, org.slug, org.name, org.members])));
  fill("keys", view.api_keys.map((key) => row([
    key.id, key.name, key.prefix, key.organization_id,
    key.scopes.length ? key.scopes.join(" ") : "(all)", key.status, key.last_used_at,
  ])));
  fill("audit", view.audit.map((entry) => row([
    entry.created_at, entry.action, entry.resource_type + " " + (entry.resource_id || ""),
    entry.principal_id, entry.api_key_id, entry.request_id,
  ])));
  fill("requests", requestRows(log));
});
