// Silent refresh for browser apps behind the auth gateway. Served by the gateway itself at
// /_gateway/client.js; no dependencies. See README "Clients".
//
//   import { createGatewayClient } from "/_gateway/client.js";
//   const gw = createGatewayClient({ onLoginRequired: () => showLogin() });
//   await gw.login("alice", "secret");
//   const response = await gw.fetch("/api/things");   // 401s are refreshed and replayed
//   gw.installAxios(axios);                           // or: the same logic on an axios instance
//
// Semantics: the token is attached when a request is sent; a 401 about the token starts one
// refresh for any number of failing requests (one per browser, across tabs, with Web Locks);
// each request is replayed at most once; a refresh refused with 401 rejects every waiter with
// LoginRequiredError, clears the tokens and calls onLoginRequired once; a transient failure
// rejects the waiters with RefreshFailedError and keeps the refresh token; 403 never refreshes;
// a stream body is not replayed; logout discards a refresh in flight.
//
//   const ws = gw.socket("wss://app.example/ws");  // a WebSocket that outlives its first token
//
// A socket of gw.socket() carries the access token as a subprotocol, and before the token
// expires (refreshAhead seconds, or 60) refreshes and sends the gateway the fresh one in band
// ({"type": "gateway.reauthenticate", ...}); the gateway closes sockets whose session ended, or
// whose token expired, with code 4401.
//
//   await gw.sessions();            // the user's live sessions, `current` marks this one
//   await gw.endSession(id);        // end one of them (another device)
//   await gw.logoutEverywhere();    // end all of them, this one included
// With cookie sessions (no tokens stored) these go by the page's cookies instead.

export class LoginRequiredError extends Error {
  constructor(message = "Login required") {
    super(message);
    this.name = "LoginRequiredError";
  }
}

export class RefreshFailedError extends Error {
  constructor(message, cause) {
    super(message);
    this.name = "RefreshFailedError";
    this.cause = cause;
  }
}

function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => items.set(key, String(value)),
    removeItem: (key) => items.delete(key),
  };
}

// The session id a token names, read without verifying (only to compare with a listed id).
function sessionOf(accessToken) {
  try {
    const payload = accessToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sid ?? null;
  } catch {
    return null;
  }
}

function replayable(body) {
  return (
    body == null ||
    typeof body === "string" ||
    body instanceof URLSearchParams ||
    body instanceof FormData ||
    body instanceof Blob ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body)
  );
}

export function createGatewayClient({
  baseUrl = "",
  storage = globalThis.localStorage ?? memoryStorage(),
  storageKey = "gateway.tokens",
  onLoginRequired = null,
  refreshAhead = null, // seconds before expiry to refresh without waiting for a 401
  lockName = "gateway-refresh",
  fetch: fetchImpl = globalThis.fetch.bind(globalThis),
} = {}) {
  const listeners = new Map();
  const channel = globalThis.BroadcastChannel ? new BroadcastChannel(storageKey) : null;
  let refreshing = null; // the one refresh in flight in this tab
  let epoch = 0; // bumped by logout and login: a refresh from an older epoch is void
  let loginRequiredNotified = false;

  function emit(event, detail) {
    for (const listener of listeners.get(event) ?? []) listener(detail);
  }

  function load() {
    try {
      return JSON.parse(storage.getItem(storageKey) ?? "null");
    } catch {
      return null;
    }
  }

  function save(body) {
    const tokens = {
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      // A duration from the server, measured on this machine: no comparison of clocks.
      expires_at:
        typeof body.expires_in === "number" ? Date.now() + body.expires_in * 1000 : null,
    };
    storage.setItem(storageKey, JSON.stringify(tokens));
    channel?.postMessage({ type: "tokens" });
    return tokens;
  }

  function clear() {
    storage.removeItem(storageKey);
    channel?.postMessage({ type: "cleared" });
  }

  function loginRequired(message) {
    if (!loginRequiredNotified) {
      loginRequiredNotified = true;
      emit("loginRequired");
      onLoginRequired?.();
    }
    return new LoginRequiredError(message);
  }

  async function withLock(task) {
    // One refresh per browser: other tabs wait, then find the tokens already renewed.
    if (globalThis.navigator?.locks) return navigator.locks.request(lockName, task);
    return task();
  }

  async function doRefresh(staleAccessToken) {
    const tokens = load();
    if (!tokens) throw loginRequired();
    if (tokens.access_token !== staleAccessToken) return tokens; // renewed meanwhile
    const started = epoch;
    let response;
    try {
      response = await fetchImpl(`${baseUrl}/user/refresh`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: tokens.refresh_token }),
      });
    } catch (error) {
      throw new RefreshFailedError(`refresh failed: ${error}`, error);
    }
    if (started !== epoch) throw new LoginRequiredError("Logged out");
    if (response.status === 400 || response.status === 401) {
      clear();
      throw loginRequired((await response.json().catch(() => ({}))).message);
    }
    if (!response.ok) throw new RefreshFailedError(`refresh failed: ${response.status}`);
    const renewed = save(await response.json());
    emit("refresh", renewed);
    return renewed;
  }

  function refresh(staleAccessToken) {
    refreshing ??= withLock(() => doRefresh(staleAccessToken)).finally(() => {
      refreshing = null; // nothing queued survives a refresh, successful or not
    });
    return refreshing;
  }

  async function refreshIfExpiring() {
    const tokens = load();
    if (refreshAhead == null || !tokens?.expires_at) return;
    if (Date.now() >= tokens.expires_at - refreshAhead * 1000) await refresh(tokens.access_token);
  }

  async function tokenRefused(response) {
    if (response.status !== 401) return false;
    if ((response.headers.get("WWW-Authenticate") ?? "").includes('error="invalid_token"')) {
      return true;
    }
    const body = await response.clone().json().catch(() => null);
    return body?.statusCode === 401;
  }

  async function send(input, init) {
    const tokens = load();
    const headers = new Headers(init.headers ?? {});
    if (tokens) headers.set("Authorization", `Bearer ${tokens.access_token}`);
    emit("request", { input, replay: Boolean(init.__replay) });
    const response = await fetchImpl(input, { ...init, headers });
    return { response, sentToken: tokens?.access_token ?? null };
  }

  async function gatewayFetch(input, init = {}) {
    if (typeof input === "string" && input.startsWith("/")) input = baseUrl + input;
    await refreshIfExpiring();
    const first = await send(input, init);
    if (first.sentToken === null || !replayable(init.body)) return first.response;
    if (!(await tokenRefused(first.response))) return first.response;
    const current = load();
    if (!current) throw new LoginRequiredError(); // the session ended while this was out
    if (current.access_token === first.sentToken) await refresh(first.sentToken);
    return (await send(input, { ...init, __replay: true })).response;
  }

  function installAxios(instance) {
    instance.interceptors.request.use((config) => {
      const tokens = load();
      config.__gatewaySentToken = tokens?.access_token ?? null;
      if (tokens) {
        if (config.headers?.set) config.headers.set("Authorization", `Bearer ${tokens.access_token}`);
        else config.headers = { ...config.headers, Authorization: `Bearer ${tokens.access_token}` };
      }
      return config;
    });
    instance.interceptors.response.use(
      (response) => response,
      async (error) => {
        const response = error?.response;
        const config = error?.config;
        // No response (network error, CORS): nothing to refresh; hand the error on untouched.
        if (!response || !config || config.__gatewayReplayed || !config.__gatewaySentToken) {
          throw error;
        }
        const challenge = String(response.headers?.["www-authenticate"] ?? "");
        const refused =
          response.status === 401 &&
          (challenge.includes('error="invalid_token"') || response.data?.statusCode === 401);
        if (!refused) throw error;
        config.__gatewayReplayed = true;
        const current = load();
        if (!current) throw new LoginRequiredError();
        if (current.access_token === config.__gatewaySentToken) {
          await refresh(config.__gatewaySentToken);
        }
        return instance(config);
      },
    );
    return instance;
  }

  async function login(username, password) {
    const response = await fetchImpl(`${baseUrl}/user/login`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw new LoginRequiredError(body.message);
    if (!response.ok) throw new Error(`login failed: ${response.status} ${body.message ?? ""}`);
    epoch += 1;
    loginRequiredNotified = false;
    return save(body);
  }

  async function logout() {
    const tokens = load();
    epoch += 1; // a refresh in flight now comes back void
    refreshing = null;
    clear();
    if (!tokens) return;
    await fetchImpl(`${baseUrl}/user/logout`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ refresh_token: tokens.refresh_token }),
    }).catch(() => undefined);
  }

  async function accountCall(path, init) {
    const response = await gatewayFetch(path, { credentials: "same-origin", ...init });
    const body = await response.json().catch(() => ({}));
    if (response.status === 401) throw loginRequired(body.message);
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.message ?? ""}`);
    return body;
  }

  async function sessions() {
    return (await accountCall("/user/sessions", { method: "GET" })).sessions ?? [];
  }

  async function endSession(id) {
    const ownSession = sessionOf(load()?.access_token);
    await accountCall(`/user/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (ownSession === id) {
      epoch += 1;
      refreshing = null;
      clear();
    }
  }

  async function logoutEverywhere() {
    const body = await accountCall("/user/logout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ all: true }),
    });
    epoch += 1;
    refreshing = null;
    clear();
    return body.ended ?? 0;
  }

  function socket(url, protocols = []) {
    const first = load()?.access_token;
    const ws = new WebSocket(url, first ? ["bearer", first, ...protocols] : protocols);
    let timer = null;
    let sent = first;
    const reauthenticate = () => {
      const token = load()?.access_token;
      if (!token || token === sent || ws.readyState !== WebSocket.OPEN) return;
      sent = token;
      ws.send(JSON.stringify({ type: "gateway.reauthenticate", access_token: token }));
    };
    const schedule = () => {
      clearTimeout(timer);
      const expiresAt = load()?.expires_at;
      if (!expiresAt || ws.readyState !== WebSocket.OPEN) return;
      const lead = (refreshAhead ?? 60) * 1000;
      timer = setTimeout(async () => {
        try {
          if (load()?.access_token === sent) await refresh(sent);
        } catch {
          return; // the gateway closes the socket (4401) when the token runs out
        }
        reauthenticate();
        schedule();
      }, Math.max(0, expiresAt - lead - Date.now()));
    };
    // A refresh made by a request (or another tab) renews the socket too.
    const renewed = () => {
      reauthenticate();
      schedule();
    };
    ws.addEventListener("open", schedule);
    ws.addEventListener("close", () => clearTimeout(timer));
    if (!listeners.has("refresh")) listeners.set("refresh", []);
    listeners.get("refresh").push(renewed);
    ws.addEventListener("close", () => {
      const list = listeners.get("refresh");
      list.splice(list.indexOf(renewed), 1);
    });
    channel?.addEventListener("message", (event) => {
      if (event.data?.type === "tokens") renewed();
    });
    return ws;
  }

  return {
    login,
    logout,
    socket,
    sessions,
    endSession,
    logoutEverywhere,
    fetch: gatewayFetch,
    installAxios,
    get tokens() {
      return load();
    },
    on(event, listener) {
      if (!listeners.has(event)) listeners.set(event, []);
      listeners.get(event).push(listener);
    },
  };
}
