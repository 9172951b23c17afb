// The models list (GET /): every registered model, and a filter box over them.
"use strict";

(function () {
  const { apiJSON, errorMessage, pageJSON, h, put } = window.maas;
  const PAGE_SIZE = 1000; // the API's largest page
  const status = document.getElementById("models-status");
  const body = document.querySelector("#models-table tbody");
  const filter = document.getElementById("model-filter");

  /** The models from page `first` on (GET /api/models), page after page. */
  async function fetchModels(first) {
    const models = [];
    for (let page = first; ; page++) {
      const answer = await apiJSON("/api/models?page_size=" + PAGE_SIZE + "&page=" + page);
      if (!answer.ok) throw new Error(errorMessage(answer));
      models.push(...answer.data);
      if (answer.data.length < PAGE_SIZE) return models;
    }
  }

  function row(model) {
    const aliases = Object.entries(model.aliases).map(([alias, version]) =>
      h("span", { class: "tag" }, alias + " → v" + version),
    );
    const searchable = [model.name, model.description || "", ...Object.keys(model.aliases)].join(" ").toLowerCase();
    return h(
      "tr",
      { "data-search": searchable },
      h("th", { scope: "row" }, h("a", { href: "/ui/models/" + encodeURIComponent(model.name) }, model.name)),
      h("td", {}, model.description || ""),
      h("td", {}, model.latest_version === null ? "none" : "v" + model.latest_version),
      h("td", {}, aliases.length ? aliases : h("span", { class: "muted" }, "none")),
    );
  }

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const tr of body.rows) {
      const match = words.every((word) => tr.dataset.search.includes(word));
      tr.hidden = !match;
      if (match) shown++;
    }
    const total = body.rows.length;
    status.textContent =
      total === 0
        ? "No models are registered yet."
        : words.length
          ? shown + " of " + total + " models match."
          : total + (total === 1 ? " model." : " models.");
  }

  async function start() {
    // Inline: the first page of models (the server's first paint); more pages are fetched.
    const initial = pageJSON("initial-data");
    let models = initial ? initial.models : [];
    try {
      if (!initial || models.length >= PAGE_SIZE) models = models.concat(await fetchModels(initial ? 2 : 1));
    } catch (error) {
      put(status, error.message + " ", h("button", { type: "button", onclick: () => location.reload() }, "Try again"));
      return;
    }
    put(body, models.map(row));
    filter.addEventListener("input", applyFilter);
    applyFilter();
  }

  start();
})();
