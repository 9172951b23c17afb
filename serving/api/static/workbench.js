// A model's workbench (GET /ui/models/<name>): the version picker, the form built from the chosen
// version's feature schema, its prediction, what-if, portfolio scoring and the version's detail.
// Every call goes through the API (window.maas.apiJSON / apiFetch); the page's first data comes
// inline when the server has no API token (see serving/api/routes/ui.py), else from the API too.
"use strict";

(function () {
  const { apiFetch, apiJSON, errorMessage, pageJSON, h, put, show, modelPath } = window.maas;
  const $ = (id) => document.getElementById(id);
  const PRIMARY = "#1f5fbf";
  const COMPARE = "#c25e00";
  const TABLE_ROWS = 100; // rows of a scored portfolio shown on the page (the download has all)

  const page = pageJSON("page-config");
  const state = { model: null, version: null, selector: null, fields: [], portfolioUrl: null };

  // -- versions ------------------------------------------------------------------------------
  /** The version the page opens on (serving/api/routes/ui.py's default_selector does the same). */
  function defaultSelector(aliases) {
    const names = Object.keys(aliases);
    if (names.includes("production")) return "production";
    return names.length ? names.sort()[0] : "latest";
  }

  /** The picker's choices: aliases (production first), then latest, then every version, newest first. */
  function pickerOptions(model) {
    const aliases = Object.keys(model.aliases).sort((a, b) =>
      a === "production" ? -1 : b === "production" ? 1 : a < b ? -1 : a > b ? 1 : 0,
    );
    const options = aliases.map((alias) => ({ value: alias, label: alias + " (v" + model.aliases[alias] + ")" }));
    if (model.latest_version !== null)
      options.push({ value: "latest", label: "latest (v" + model.latest_version + ")" });
    for (const version of model.versions)
      options.push({ value: String(version.version), label: "v" + version.version });
    return options;
  }

  function versionLabel(number) {
    const aliases = Object.entries(state.model.aliases)
      .filter(([, v]) => v === number)
      .map(([alias]) => alias);
    if (number === state.model.latest_version) aliases.push("latest");
    return "v" + number + (aliases.length ? " (" + aliases.join(", ") + ")" : "");
  }

  function versionPath(selector) {
    return modelPath(page.model) + "/versions/" + encodeURIComponent(selector);
  }

  function fillPickers() {
    const options = pickerOptions(state.model);
    put(
      $("version-picker"),
      ...options.map((o) => h("option", { value: o.value, selected: o.value === state.selector }, o.label)),
    );
    $("version-picker").disabled = false;
    const compare = $("whatif-compare");
    const kept = compare.value;
    put(
      compare,
      h("option", { value: "" }, "no other version"),
      ...options
        .filter((o) => o.value !== state.selector)
        .map((o) => h("option", { value: o.value, selected: o.value === kept }, o.label)),
    );
  }

  // -- the form ------------------------------------------------------------------------------
  /** The first record of a `data` value in any of its shapes (records, one record, columns, rows). */
  function firstRecord(example, features) {
    if (example === null || example === undefined) return null;
    if (Array.isArray(example)) {
      const first = example[0];
      if (Array.isArray(first)) return Object.fromEntries(features.map((f, i) => [f.name, first[i]]));
      return first && typeof first === "object" ? first : null;
    }
    if (typeof example !== "object") return null;
    const entries = Object.entries(example);
    if (entries.length && entries.every(([, v]) => Array.isArray(v))) {
      return Object.fromEntries(entries.map(([k, v]) => [k, v[0]]));
    }
    return example;
  }

  /** A value to start from when the version has no example: a bound's midpoint, the first allowed value. */
  function schemaDefault(feature) {
    if (feature.allowed && feature.allowed.length) return feature.allowed[0];
    if (feature.type === "boolean") return false;
    if (feature.type === "string") return "";
    const { minimum: low, maximum: high } = feature;
    let value = low !== null && high !== null ? (low + high) / 2 : low !== null ? low : high !== null ? high : 0;
    if (feature.type === "integer") value = low !== null && high !== null ? Math.floor(value) : Math.round(value);
    return value;
  }

  function sameKind(a, b) {
    return (
      a.type === b.type &&
      JSON.stringify(a.allowed) === JSON.stringify(b.allowed) &&
      Boolean(a.accepts_unseen) === Boolean(b.accepts_unseen)
    );
  }

  /** A feature whose value is one of a closed list: a select. (One that accepts unseen values lists its
   * known values as suggestions of a text or number input instead.) */
  function closedChoice(feature) {
    return Boolean(feature.allowed && feature.allowed.length && !feature.accepts_unseen);
  }

  function suggestions(feature, id) {
    if (!(feature.accepts_unseen && feature.allowed && feature.allowed.length)) return null;
    return h(
      "datalist",
      { id: id + "-known" },
      feature.allowed.map((value) => h("option", { value: String(value) })),
    );
  }

  function control(feature, id, describedBy) {
    const common = { id, name: feature.name, "aria-describedby": describedBy };
    if (feature.accepts_unseen && feature.allowed && feature.allowed.length) common.list = id + "-known";
    if (closedChoice(feature)) {
      const select = h(
        "select",
        common,
        feature.required ? null : h("option", { value: "" }, "(missing)"),
        feature.allowed.map((value, i) => h("option", { value: String(i) }, show(value))),
      );
      return select;
    }
    if (feature.type === "boolean") return h("input", { ...common, type: "checkbox" });
    if (feature.type === "number" || feature.type === "integer") {
      return h("input", {
        ...common,
        type: "number",
        inputmode: feature.type === "integer" ? "numeric" : "decimal",
        step: feature.type === "integer" ? "1" : "any",
        min: feature.minimum,
        max: feature.maximum,
      });
    }
    return h("input", { ...common, type: "text", autocomplete: "off", spellcheck: "false" });
  }

  function hint(feature) {
    const parts = [feature.type];
    if (feature.minimum !== null && feature.maximum !== null) {
      parts.push(show(feature.minimum) + " to " + show(feature.maximum));
    } else if (feature.minimum !== null) parts.push("at least " + show(feature.minimum));
    else if (feature.maximum !== null) parts.push("at most " + show(feature.maximum));
    if (feature.allowed)
      parts.push(feature.allowed.length + (feature.accepts_unseen ? " known values, others accepted" : " choices"));
    return parts.join(", ");
  }

  function setValue(field, value) {
    const { feature, input } = field;
    if (closedChoice(feature)) {
      const i = feature.allowed.findIndex((a) => JSON.stringify(a) === JSON.stringify(value));
      input.value = i >= 0 ? String(i) : feature.required ? "0" : "";
    } else if (feature.type === "boolean") {
      input.checked = value === true;
    } else {
      input.value = value === null || value === undefined ? "" : String(value);
    }
  }

  function valueOf(field) {
    const { feature, input } = field;
    if (closedChoice(feature)) return input.value === "" ? null : feature.allowed[Number(input.value)];
    if (feature.type === "boolean") return input.checked;
    if (feature.type === "number" || feature.type === "integer") {
      if (input.value.trim() === "") return null;
      const number = Number(input.value);
      return Number.isFinite(number) ? number : input.value;
    }
    return input.value === "" && !feature.required ? null : input.value;
  }

  /** The form's applicant, as the record the API takes. */
  function readRecord() {
    return Object.fromEntries(state.fields.map((field) => [field.feature.name, valueOf(field)]));
  }

  /** Build the form for state.version; `kept` holds values to keep for features of the same kind. */
  function buildForm(kept) {
    const features = state.version.features;
    const example = firstRecord(state.version.example, features) || {};
    state.fields = features.map((feature, i) => {
      const id = "f-" + i;
      const input = control(feature, id, id + "-hint " + id + "-error");
      const label = h(
        "label",
        { for: id },
        h("span", { class: "feature-name" }, feature.name),
        feature.required ? null : h("span", { class: "optional-tag" }, "optional"),
      );
      const error = h("p", { class: "field-error", id: id + "-error" });
      const note = h("p", { class: "hint", id: id + "-hint" }, hint(feature));
      const box =
        feature.type === "boolean" && !closedChoice(feature)
          ? h("div", { class: "field checkbox", "data-feature": feature.name }, input, label, note, error)
          : h("div", { class: "field", "data-feature": feature.name }, label, input, suggestions(feature, id), note, error);
      const field = { feature, input, error, box };
      let value = feature.name in example ? example[feature.name] : schemaDefault(feature);
      if (kept && kept.has(feature.name) && sameKind(kept.get(feature.name).feature, feature)) {
        value = kept.get(feature.name).value;
      }
      setValue(field, value);
      return field;
    });
    put($("fields"), ...state.fields.map((f) => f.box));
    $("form-note").hidden = firstRecord(state.version.example, features) !== null;
    clearFieldErrors();
  }

  function resetForm() {
    buildForm(null);
    updateCurl();
  }

  function clearFieldErrors() {
    for (const field of state.fields) {
      field.error.textContent = "";
      field.input.removeAttribute("aria-invalid");
      field.box.classList.remove("invalid");
    }
    $("form-errors").textContent = "";
  }

  /**
   * Put each message of a 422's errors.json.data ({feature: [messages]}, for one record) beside
   * its field; anything else goes above the buttons. Answers the first field with an error.
   */
  function showFieldErrors(answer) {
    clearFieldErrors();
    let detail = answer.data && answer.data.errors && answer.data.errors.json;
    const other = [];
    let first = null;
    if (detail && detail.data && typeof detail.data === "object" && !Array.isArray(detail.data)) {
      let perFeature = detail.data;
      if (Object.keys(perFeature).length === 1 && "0" in perFeature && typeof perFeature["0"] === "object") {
        perFeature = perFeature["0"];
      }
      for (const [name, messages] of Object.entries(perFeature)) {
        const text = [].concat(messages).join(" ");
        const field = state.fields.find((f) => f.feature.name === name);
        if (field) {
          field.error.textContent = text;
          field.input.setAttribute("aria-invalid", "true");
          field.box.classList.add("invalid");
          first = first || field;
        } else other.push(name + ": " + text);
      }
      detail = Object.fromEntries(Object.entries(detail).filter(([k]) => k !== "data"));
    }
    for (const [name, messages] of Object.entries(detail || {})) other.push(name + ": " + JSON.stringify(messages));
    $("form-errors").textContent = other.join(" ");
    return first;
  }

  // -- predict -------------------------------------------------------------------------------
  function predictBody() {
    return { data: readRecord(), return_probabilities: Boolean(state.version.has_predict_proba) };
  }

  function probabilityBars(probabilities, predicted) {
    const classes = state.version.classes ? state.version.classes.map(String) : Object.keys(probabilities);
    return h(
      "div",
      { class: "bars", role: "list", "aria-label": "Class probabilities" },
      classes.map((label) => {
        const p = probabilities[label];
        const percent = p === null || p === undefined ? 0 : p * 100;
        return h(
          "div",
          {
            class: "bar-row" + (label === String(predicted) ? " predicted" : ""),
            role: "listitem",
            "data-class": label,
          },
          h("span", { class: "bar-label" }, label),
          h("span", { class: "bar-track" }, h("span", { class: "bar", style: "width: " + percent.toFixed(2) + "%" })),
          h("span", { class: "bar-value", "data-probability": p }, p === null ? "n/a" : percent.toFixed(1) + " %"),
        );
      }),
    );
  }

  async function predict(event) {
    if (event) event.preventDefault();
    const out = $("prediction");
    out.setAttribute("aria-busy", "true");
    delete out.dataset.status;
    const body = predictBody();
    const answer = await apiJSON(versionPath(state.selector) + "/predict", body);
    out.removeAttribute("aria-busy");
    out.dataset.response = JSON.stringify(answer.data);
    out.dataset.status = String(answer.status);
    if (answer.ok) {
      clearFieldErrors();
      const prediction = answer.data.predictions[0];
      put(
        out,
        h("p", { class: "answer" }, "Prediction: ", h("strong", { class: "prediction-value" }, show(prediction))),
        h(
          "p",
          { class: "answered-by" },
          "Answered by ",
          h("strong", {}, versionLabel(answer.data.version)),
          " of " + answer.data.model + ".",
        ),
        answer.data.probabilities ? probabilityBars(answer.data.probabilities[0], prediction) : null,
      );
      out.classList.remove("failed");
      return answer;
    }
    out.classList.add("failed");
    const first = answer.status === 422 ? showFieldErrors(answer) : null;
    put(out, h("p", { class: "error-message" }, errorMessage(answer)));
    if (first) first.input.focus();
    return answer;
  }

  // -- what if -------------------------------------------------------------------------------
  let chartScripts = null;

  /** Load uPlot and whatif-chart.js (page.charts, in order) once; resolves when they have run. */
  function chartsReady() {
    if (!chartScripts) {
      chartScripts = page.charts
        .reduce(
          (previous, src) =>
            previous.then(
              () =>
                new Promise((resolve, reject) => {
                  const script = h("script", { src });
                  script.addEventListener("load", resolve);
                  script.addEventListener("error", () => reject(new Error("Could not load " + src)));
                  document.head.append(script);
                }),
            ),
          Promise.resolve(),
        )
        .catch((error) => {
          chartScripts = null; // try again next time
          throw error;
        });
    }
    return chartScripts;
  }
  function targetOptions() {
    const control = $("whatif-target-control");
    const select = $("whatif-target");
    const classes = state.version.has_predict_proba && state.version.classes ? state.version.classes.map(String) : [];
    control.hidden = classes.length === 0;
    const kept = select.value;
    put(select, ...classes.map((c) => h("option", { value: c }, c)));
    if (classes.length) select.value = classes.includes(kept) ? kept : classes[classes.length - 1];
  }

  function whatIfBody(record, version) {
    const points = Math.min(200, Math.max(2, parseInt($("whatif-points").value, 10) || 25));
    const body = { data: record, points };
    const target = $("whatif-target").value;
    if (version.has_predict_proba && version.classes && version.classes.map(String).includes(target))
      body.target = target;
    return body;
  }

  async function compareAnswer(selector, record) {
    const version = await apiJSON(versionPath(selector));
    if (!version.ok) return version;
    const names = new Set(version.data.features.map((f) => f.name));
    const own = Object.fromEntries(Object.entries(record).filter(([name]) => names.has(name)));
    return apiJSON(versionPath(selector) + "/whatif", whatIfBody(own, version.data));
  }

  function isCategorical(feature) {
    return (
      !feature ||
      feature.type === "boolean" ||
      feature.type === "string" ||
      Boolean(feature.allowed && feature.allowed.length)
    );
  }

  function flipList(answer, record) {
    const items = answer.features
      .filter((f) => f.flip)
      .map((f) =>
        h(
          "li",
          { "data-feature": f.name, "data-value": JSON.stringify(f.flip.value) },
          h("span", {}, h("strong", {}, f.name), ": " + show(f.flip.value) + " instead of " + show(record[f.name])),
          h(
            "span",
            { class: "muted" },
            " gives " + show(f.flip.prediction) + (f.flip.score === null ? "" : " (score " + show(f.flip.score) + ")"),
          ),
          " ",
          h(
            "button",
            { type: "button", class: "small", onclick: () => applyFlip(f.name, f.flip.value) },
            "Put it in the form",
          ),
        ),
      );
    return items.length
      ? h("ul", { id: "flips", class: "flips" }, items)
      : h("p", { id: "flips", class: "muted" }, "No single change within the swept values changes the decision.");
  }

  async function applyFlip(name, value) {
    const field = state.fields.find((f) => f.feature.name === name);
    if (!field) return;
    setValue(field, value);
    updateCurl();
    await predict();
    $("prediction").focus();
  }

  function numbersTable(name, curves) {
    const categorical = isCategorical(state.version.features.find((f) => f.name === name));
    const keys = [];
    const byKey = new Map();
    curves.forEach((curve, c) =>
      curve.feature.values.forEach((value, i) => {
        const key = JSON.stringify(value);
        if (!byKey.has(key)) {
          byKey.set(key, { value, cells: [] });
          keys.push(key);
        }
        byKey.get(key).cells[c] = [curve.feature.predictions[i], curve.feature.scores[i]];
      }),
    );
    if (!categorical) keys.sort((a, b) => byKey.get(a).value - byKey.get(b).value);
    return h(
      "table",
      { class: "numbers" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, name),
          curves.map((c) => [h("th", { scope: "col" }, c.label + " prediction"), h("th", { scope: "col" }, "score")]),
        ),
      ),
      h(
        "tbody",
        {},
        keys.map((key) => {
          const row = byKey.get(key);
          return h(
            "tr",
            {},
            h("th", { scope: "row" }, show(row.value)),
            curves.map((_, c) => {
              const cell = row.cells[c];
              return [
                h("td", {}, cell ? show(cell[0]) : ""),
                h("td", {}, cell && cell[1] !== null ? show(cell[1]) : ""),
              ];
            }),
          );
        }),
      ),
    );
  }

  function featureFigure(feature, index, answer, compare, record) {
    const spec = state.version.features.find((f) => f.name === feature.name);
    const curves = [{ label: versionLabel(answer.version), color: PRIMARY, dash: undefined, feature }];
    const other = compare && compare.features.find((f) => f.name === feature.name);
    if (other) curves.push({ label: versionLabel(compare.version), color: COMPARE, dash: [6, 4], feature: other });
    const swing = (f) => (f.swing === null ? "none" : show(f.swing));
    const caption = h(
      "figcaption",
      {},
      h("strong", {}, index + 1 + ". " + feature.name),
      " swing " + swing(feature) + (other ? "; " + versionLabel(compare.version) + ": " + swing(other) : ""),
    );
    const figure = h("figure", { class: "whatif-feature", "data-feature": feature.name }, caption);
    const scored = curves.filter((c) => c.feature.scores.some((s) => s !== null));
    if (scored.length) {
      const chart = h("div", {
        class: "chart",
        role: "img",
        "aria-label": "Score against " + feature.name + "; the numbers are in the table below.",
      });
      figure.append(chart);
      figure.pendingChart = {
        name: feature.name,
        numeric: !isCategorical(spec),
        yLabel: answer.target === null || answer.target === undefined ? "prediction" : "P(" + answer.target + ")",
        yRange: state.version.has_predict_proba ? [0, 1] : null,
        curves: scored.map((c) => ({
          label: c.label,
          color: c.color,
          dash: c.dash,
          values: c.feature.values,
          scores: c.feature.scores,
        })),
        baseline: record[feature.name] === null ? null : { value: record[feature.name], score: answer.baseline.score },
      };
    } else {
      figure.append(h("p", { class: "muted" }, "This model's answers are not numbers: no curve, see the table."));
    }
    figure.append(h("details", {}, h("summary", {}, "The numbers"), numbersTable(feature.name, curves)));
    return figure;
  }

  async function runWhatIf() {
    const out = $("whatif-result");
    const button = $("whatif-run");
    button.disabled = true;
    out.setAttribute("aria-busy", "true");
    delete out.dataset.status;
    const record = readRecord();
    const selector = state.selector;
    const compareSelector = $("whatif-compare").value;
    try {
      const [answer, compare] = await Promise.all([
        apiJSON(versionPath(selector) + "/whatif", whatIfBody(record, state.version)),
        compareSelector ? compareAnswer(compareSelector, record) : Promise.resolve(null),
      ]);
      out.dataset.response = JSON.stringify(answer.data);
      out.dataset.status = String(answer.status);
      if (compare) out.dataset.compareResponse = JSON.stringify(compare.data);
      else delete out.dataset.compareResponse;
      if (!answer.ok) {
        if (answer.status === 422) showFieldErrors(answer);
        put(out, h("p", { class: "error-message" }, errorMessage(answer)));
        return;
      }
      clearFieldErrors();
      const data = answer.data;
      const compareData = compare && compare.ok ? compare.data : null;
      // The score of a classifier (a class's probability); a model of numbers' score is its answer.
      const score = (a) => (a.target === null || a.baseline.score === null ? "" : ", score " + show(a.baseline.score));
      const summary = [
        h(
          "p",
          {},
          versionLabel(data.version) + " answers ",
          h("strong", {}, show(data.baseline.prediction)),
          score(data) + " for the form's applicant.",
        ),
      ];
      if (compareData) {
        summary.push(
          h(
            "p",
            {},
            versionLabel(compareData.version) + " answers ",
            h("strong", {}, show(compareData.baseline.prediction)),
            score(compareData) + ".",
          ),
        );
      } else if (compare) {
        summary.push(h("p", { class: "error-message" }, "The other version did not answer: " + errorMessage(compare)));
      }
      const figures = data.features.map((f, i) => featureFigure(f, i, data, compareData, record));
      // A model of numbers answers another number for nearly every value: no decision to change.
      const decides = Boolean(state.version.classes);
      put(
        out,
        ...summary,
        decides ? [h("h3", {}, "What would change the decision"), flipList(data, record)] : null,
        h("h3", {}, "How each feature moves the score, largest swing first"),
        h("div", { class: "figures" }, figures),
      );
      try {
        await chartsReady();
      } catch (error) {
        out.append(h("p", { class: "error-message" }, error.message + ": no charts, the numbers are in the tables."));
        return;
      }
      for (const figure of figures) {
        if (figure.pendingChart) window.maas.drawWhatIf(figure.querySelector(".chart"), figure.pendingChart);
      }
    } finally {
      button.disabled = false;
      out.removeAttribute("aria-busy");
    }
  }

  // -- portfolio -----------------------------------------------------------------------------
  /** RFC 4180 rows (quoted fields, doubled quotes, CRLF or LF line ends). */
  function parseCSV(text) {
    const rows = [];
    let row = [];
    let field = "";
    let quoted = false;
    for (let i = 0; i < text.length; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') {
          field += '"';
          i++;
        } else if (c === '"') quoted = false;
        else field += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") {
        row.push(field);
        field = "";
      } else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(field);
        rows.push(row);
        row = [];
        field = "";
      } else field += c;
    }
    if (field !== "" || row.length) {
      row.push(field);
      rows.push(row);
    }
    return rows;
  }

  function csvField(value) {
    const text = value === null || value === undefined ? "" : String(value);
    return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function downloadText(text, filename) {
    const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    const link = h("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function downloadTemplate() {
    const names = state.version.features.map((f) => f.name);
    const record = readRecord();
    const text = names.map(csvField).join(",") + "\r\n" + names.map((n) => csvField(record[n])).join(",") + "\r\n";
    downloadText(text, page.model + "-applicants.csv");
  }

  /** Each problem of a refused CSV: rows (errors.json.data) or the text itself (errors.csv.body). */
  function portfolioErrors(answer) {
    const items = [];
    const errors = (answer.data && answer.data.errors) || {};
    const rows = (errors.json && errors.json.data) || (errors.csv && errors.csv.body);
    const row = (key) => "Row " + (Number(key) + 1) + " (line " + (Number(key) + 2) + " of the file)";
    if (Array.isArray(rows)) rows.forEach((message) => items.push(String(message)));
    else if (rows && typeof rows === "object") {
      for (const [key, value] of Object.entries(rows)) {
        const where = /^\d+$/.test(key) ? row(key) : key;
        if (value && typeof value === "object" && !Array.isArray(value)) {
          for (const [name, messages] of Object.entries(value))
            items.push(where + ", " + name + ": " + [].concat(messages).join(" "));
        } else items.push(where + ": " + [].concat(value).join(" "));
      }
    }
    return items;
  }

  function summarize(header, rows) {
    const column = header.indexOf("prediction");
    if (column < 0) return null;
    const counts = new Map();
    for (const row of rows) counts.set(row[column], (counts.get(row[column]) || 0) + 1);
    if (counts.size > 12) return null;
    return [...counts.entries()].map(([value, n]) => n + " predicted " + value).join(", ");
  }

  async function scorePortfolio() {
    const out = $("portfolio-result");
    const file = $("portfolio-file").files[0];
    const text = file ? await file.text() : $("portfolio-text").value;
    if (!text.trim()) {
      put(out, h("p", { class: "error-message" }, "Choose a CSV file, or paste CSV text, first."));
      return;
    }
    const button = $("portfolio-run");
    button.disabled = true;
    out.setAttribute("aria-busy", "true");
    delete out.dataset.status;
    try {
      const query = state.version.has_predict_proba ? "?return_probabilities=true" : "";
      const response = await apiFetch(versionPath(state.selector) + "/predict" + query, {
        method: "POST",
        headers: { "Content-Type": "text/csv", Accept: "text/csv" },
        body: text,
      });
      if (state.portfolioUrl) URL.revokeObjectURL(state.portfolioUrl);
      state.portfolioUrl = null;
      out.dataset.status = String(response.status);
      if (!response.ok) {
        let data = null;
        try {
          data = await response.json();
        } catch (_) {
          data = null;
        }
        const answer = { ok: false, status: response.status, data };
        out.dataset.response = JSON.stringify(data);
        const problems = portfolioErrors(answer);
        put(
          out,
          h("p", { class: "error-message" }, errorMessage(answer)),
          problems.length
            ? h(
                "ul",
                { class: "problems" },
                problems.slice(0, 50).map((p) => h("li", {}, p)),
              )
            : null,
          problems.length > 50 ? h("p", { class: "muted" }, problems.length - 50 + " more problems not shown.") : null,
        );
        return;
      }
      delete out.dataset.response;
      const csv = await response.text();
      const [header, ...rows] = parseCSV(csv).filter((r) => r.length > 1 || r[0] !== "");
      // A CSV answer does not say which version answered: the picker's choice, as last resolved.
      const who = versionLabel(state.version.version);
      state.portfolioUrl = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
      const filename = page.model + "-" + state.selector + "-scored.csv";
      const counts = summarize(header, rows);
      put(
        out,
        h(
          "p",
          {},
          rows.length +
            (rows.length === 1 ? " applicant" : " applicants") +
            " scored by " +
            who +
            (counts ? ": " + counts + "." : "."),
        ),
        h(
          "p",
          {},
          h("a", { id: "portfolio-download", href: state.portfolioUrl, download: filename }, "Download the scored CSV"),
          " (" + filename + ")",
        ),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "portfolio-table", class: "scored" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                header.map((name) => h("th", { scope: "col" }, name)),
              ),
            ),
            h(
              "tbody",
              {},
              rows.slice(0, TABLE_ROWS).map((row) =>
                h(
                  "tr",
                  {},
                  row.map((cell, i) =>
                    h("td", {}, header[i].startsWith("probability_") && cell !== "" ? show(Number(cell)) : cell),
                  ),
                ),
              ),
            ),
          ),
        ),
        rows.length > TABLE_ROWS
          ? h(
              "p",
              { class: "muted" },
              "The first " + TABLE_ROWS + " rows are shown; the download has all " + rows.length + ".",
            )
          : null,
      );
    } finally {
      button.disabled = false;
      out.removeAttribute("aria-busy");
    }
  }

  // -- version detail and the curl command ----------------------------------------------------
  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function updateCurl() {
    if (!state.version) return;
    const lines = [
      "curl -s " + shellQuote(location.origin + versionPath(state.selector) + "/predict"),
      "  -H 'Content-Type: application/json'",
    ];
    if (page.token) lines.push('  -H "Authorization: Bearer $MAAS_API_TOKEN"');
    lines.push("  -d " + shellQuote(JSON.stringify(predictBody())));
    $("curl").textContent = lines.join(" \\\n");
  }

  async function copyCurl() {
    const text = $("curl").textContent;
    const status = $("copy-status");
    try {
      await navigator.clipboard.writeText(text);
      status.textContent = "Copied.";
    } catch (_) {
      // No clipboard API here (a page served over plain HTTP from another host): select it instead.
      const range = document.createRange();
      range.selectNodeContents($("curl"));
      const selection = getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
    }
  }

  function definition(term, ...value) {
    return [h("dt", {}, term), h("dd", {}, ...value)];
  }

  function mapList(map) {
    const entries = Object.entries(map || {});
    return entries.length
      ? h(
          "ul",
          { class: "plain" },
          entries.map(([k, v]) => h("li", {}, k + ": " + v)),
        )
      : "none";
  }

  function renderDetails() {
    const v = state.version;
    const created = new Date(v.created_at);
    put(
      $("version-details"),
      ...definition("Version", versionLabel(v.version)),
      ...definition("Description", v.description || "none"),
      ...definition("Estimator", h("code", {}, v.estimator)),
      ...definition("Classes", v.classes ? v.classes.map(show).join(", ") : "none (not a classifier)"),
      ...definition("Format", v.format),
      ...definition("Size", show(v.size_bytes) + " bytes"),
      ...definition("SHA-256", h("code", { class: "digest" }, v.sha256)),
      ...definition(
        "Created",
        h("time", { datetime: v.created_at }, created.toLocaleString()),
        " (" + v.created_at + ")",
      ),
      ...definition("Library versions", mapList(v.library_versions)),
      ...definition("Tags", mapList(v.tags)),
      ...definition("Features", String(v.features.length)),
    );
  }

  function renderVersions() {
    put(
      $("versions-table").tBodies[0],
      ...state.model.versions.map((v) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, h("a", { href: "?version=" + v.version }, "v" + v.version)),
          h("td", {}, v.aliases.length ? v.aliases.map((a) => h("span", { class: "tag" }, a)) : ""),
          h("td", {}, h("time", { datetime: v.created_at }, new Date(v.created_at).toLocaleDateString())),
          h("td", {}, h("code", {}, v.estimator.split(".").pop())),
          h("td", {}, v.description || ""),
        ),
      ),
    );
  }

  function renderVersion() {
    const v = state.version;
    const kind = v.classes ? "a classifier of " + v.classes.length + " classes" : "a model of numbers";
    $("version-summary").textContent = v.estimator.split(".").pop();
    $("page-status").textContent =
      versionLabel(v.version) +
      ": " +
      kind +
      ", " +
      v.features.length +
      " features" +
      (v.example === null ? "" : "; the form starts from its example") +
      ".";
    renderDetails();
    targetOptions();
    updateCurl();
    document.body.dataset.version = String(v.version);
    document.body.dataset.selector = state.selector;
  }

  function forgetAnswers() {
    for (const id of ["prediction", "whatif-result", "portfolio-result"]) {
      const out = $(id);
      put(out);
      delete out.dataset.response;
      delete out.dataset.compareResponse;
      delete out.dataset.status;
    }
  }

  async function selectVersion(selector) {
    const answer = await apiJSON(versionPath(selector));
    if (!answer.ok) {
      $("page-status").textContent = errorMessage(answer);
      $("version-picker").value = state.selector;
      return;
    }
    const kept = new Map(state.fields.map((f) => [f.feature.name, { feature: f.feature, value: valueOf(f) }]));
    state.selector = selector;
    state.version = answer.data;
    history.replaceState(null, "", "?version=" + encodeURIComponent(selector));
    fillPickers();
    buildForm(kept);
    forgetAnswers();
    renderVersion();
  }

  // -- start ---------------------------------------------------------------------------------
  async function load() {
    const initial = pageJSON("initial-data");
    if (initial) return initial;
    const model = await apiJSON(modelPath(page.model));
    if (!model.ok) throw new Error(errorMessage(model));
    const selector = page.selector || defaultSelector(model.data.aliases);
    const version = await apiJSON(versionPath(selector));
    if (!version.ok) throw new Error(errorMessage(version));
    page.selector = selector;
    return { model: model.data, version: version.data };
  }

  async function start() {
    let data;
    try {
      data = await load();
    } catch (error) {
      put(
        $("page-status"),
        error.message + " ",
        h("button", { type: "button", onclick: () => location.reload() }, "Try again"),
      );
      document.querySelectorAll("main > section, nav.sections").forEach((node) => (node.hidden = true));
      return;
    }
    state.model = data.model;
    state.version = data.version;
    state.selector = page.selector;
    $("model-description").textContent = state.model.description || "";
    fillPickers();
    buildForm(null);
    renderVersions();
    renderVersion();
    $("predict-form").addEventListener("submit", predict);
    $("predict-form").addEventListener("input", updateCurl);
    $("predict-form").addEventListener("change", updateCurl);
    $("reset-form").addEventListener("click", resetForm);
    $("version-picker").addEventListener("change", (event) => selectVersion(event.target.value));
    $("whatif-run").addEventListener("click", runWhatIf);
    $("portfolio-run").addEventListener("click", scorePortfolio);
    $("csv-template").addEventListener("click", downloadTemplate);
    $("copy-curl").addEventListener("click", copyCurl);
    document.body.dataset.ready = "true";
    // The charts' scripts, fetched once the page has painted and is idle, ready for the first what-if.
    const later = window.requestIdleCallback || ((f) => setTimeout(f, 200));
    later(() => chartsReady().catch(() => {}));
  }

  start();
})();
