// What every page shares: the API client (with the API token, asked for once and kept in this
// tab's sessionStorage), the page's inline JSON, and a small element builder.
"use strict";

window.maas = (function () {
  const TOKEN_KEY = "maas.api-token";
  let question = null; // the token question on screen, shared by every request that got a 401
  let memoryToken = null; // where the token is kept when sessionStorage refuses it

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY);
    } catch (_) {
      return null;
    }
  }

  function storeToken(token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      // Storage refused (a private mode): the token lives as long as this page.
    }
    memoryToken = token || null;
  }

  function currentToken() {
    return storedToken() || memoryToken;
  }

  /** Ask for the token in the page's dialog; resolves to the token, or null when cancelled. */
  function askToken(refused) {
    if (question) return question;
    const dialog = document.getElementById("token-dialog");
    const input = document.getElementById("token-input");
    document.getElementById("token-reason").textContent = refused
      ? "That token was refused. Type the API token again (it is kept in this browser tab only)."
      : "This service asks for an API token. It is kept in this browser tab only, until the tab is closed.";
    input.value = "";
    dialog.returnValue = "";
    question = new Promise((resolve) => {
      dialog.addEventListener(
        "close",
        () => {
          const token = dialog.returnValue === "ok" ? input.value.trim() : "";
          input.value = "";
          question = null;
          if (token) storeToken(token);
          resolve(token || null);
        },
        { once: true },
      );
    });
    dialog.showModal();
    input.focus();
    return question;
  }

  /**
   * fetch() for the service's API: sends the stored token, and on a 401 asks for one (once for
   * all requests waiting) and tries again. Answers the Response; a cancelled question leaves the 401.
   */
  async function apiFetch(path, options) {
    options = options || {};
    for (;;) {
      const headers = new Headers(options.headers || {});
      const sent = currentToken();
      if (sent) headers.set("Authorization", "Bearer " + sent);
      const response = await fetch(path, { ...options, headers, credentials: "same-origin", cache: "no-store" });
      if (response.status !== 401) return response;
      const now = currentToken();
      if (now && now !== sent) continue; // another request got a token meanwhile
      if (sent) storeToken(null);
      const token = await askToken(Boolean(sent));
      if (!token) return response;
    }
  }

  /** A JSON request to the API: {ok, status, data} (data: the parsed body, or null). */
  async function apiJSON(path, body) {
    const options = { method: body === undefined ? "GET" : "POST", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await apiFetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data, response };
  }

  /** The message of an API error answer (the contract's {code, status, message}). */
  function errorMessage(answer) {
    if (answer.data && typeof answer.data.message === "string") return answer.data.message;
    if (answer.status === 401) return "The service needs an API token to answer.";
    return "The service answered " + answer.status + ".";
  }

  /** The JSON of a <script type="application/json" id="..."> in the page, or null. */
  function pageJSON(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  /** An element: h("p", {class: "x", onclick: f}, "text", child...). */
  function h(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else if (value === true) node.setAttribute(key, "");
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** Replace a node's children (nested lists flattened; null, undefined and false left out). */
  function put(node, ...children) {
    node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  }

  const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 4 });

  /** A value for people: numbers grouped, booleans and null spelled out. */
  function show(value) {
    if (value === null || value === undefined) return "(missing)";
    if (typeof value === "number") return numbers.format(value);
    return String(value);
  }

  function modelPath(name) {
    return "/api/models/" + encodeURIComponent(name);
  }

  return { apiFetch, apiJSON, errorMessage, pageJSON, h, put, show, modelPath, currentToken };
})();
