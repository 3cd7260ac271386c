// The generic inspector: the service's /_emulate/state summary and its request log.
every_second(async (state) => {
  const log = await json("/_emulate/requests?limit=50");
  const name = Object.keys(state.services)[0];
  document.title = "Emulator inspector: " + name;
  document.querySelector("h1").textContent = "Emulator inspector: " + name;
  fill("state", summaryRows(state.services[name]));
  fill("requests", requestRows(log));
});
