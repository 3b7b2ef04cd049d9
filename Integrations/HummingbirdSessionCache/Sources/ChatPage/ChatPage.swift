// The example chat's page, shared by its Hummingbird (ChatExample) and Vapor (VaporChatExample)
// servers, which answer the same API: /api/state, /api/login, /api/messages, /api/mode,
// /api/conversations, /api/devices, /api/logout-everywhere.

/// The chat page: plain HTML, its stylesheet and a little JavaScript, served by every instance.
/// The script and the stylesheet are files of their own (`/app.js`, `/app.css`), so that the page's
/// Content-Security-Policy allows no inline code; the script puts user text in the page only as
/// text (`textContent`), never as HTML.
public let page = """
    <!doctype html><html><head><meta charset="utf-8"><title>Chat</title><link rel="stylesheet" href="/app.css"></head><body>
    <h1>Chat</h1><p>served by <b id="instance">?</b></p>
    <div id="login"><input id="name" placeholder="your name"><button id="login-button">Log in</button></div>
    <div id="chat" class="hidden">
      <p>signed in as <b id="user"></b> · mode <select id="mode"><option value="short">short</option><option value="standard">standard</option>
      <option value="lenient">lenient</option></select> · <span id="left"></span></p>
      <div id="warning">Your conversation ends soon for inactivity: send a message to keep it.</div>
      <div id="log"></div>
      <form id="send"><input id="text" autocomplete="off" size="50"><button>Send</button></form>
      <p><button id="conversations-button">My conversations</button> <button id="devices-button">My devices</button>
      <button id="logout-everywhere">Log out everywhere</button></p>
      <ul id="conversations"></ul><ul id="devices"></ul>
    </div>
    <script src="/app.js"></script></body></html>
    """

/// The page's stylesheet (`/app.css`).
public let stylesheet = """
    body{font-family:system-ui,sans-serif;max-width:720px;margin:2em auto}#log{border:1px solid #ccc;min-height:200px;padding:8px}
    .user{color:#235}.assistant{color:#585}#warning{background:#fd6;padding:6px;display:none}.hidden{display:none}
    """

/// The page's script (`/app.js`).
public let script = """
    const $ = (id) => document.getElementById(id);
    // An element holding `text` as text: whatever a user typed is never parsed as HTML.
    function element(tag, text, className) {
      const node = document.createElement(tag);
      node.textContent = text;
      if (className) node.className = className;
      return node;
    }
    async function post(path, body) {
      const response = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body || {})});
      if (!response.ok) throw new Error(path + ": " + response.status);
    }
    async function refresh() {
      const state = await (await fetch("/api/state")).json();
      $("instance").textContent = state.instance;
      const signedIn = !!state.user;
      $("login").classList.toggle("hidden", signedIn);
      $("chat").classList.toggle("hidden", !signedIn);
      if (!signedIn) return;
      $("user").textContent = state.user;
      $("left").textContent = Math.round(state.secondsLeft) + " s left";
      $("warning").style.display = state.warning ? "block" : "none";
      if (document.activeElement !== $("mode")) $("mode").value = state.mode.startsWith("custom") ? "short" : state.mode;
      $("log").replaceChildren(...state.messages.map((m) => element("div", m.role + ": " + m.content, m.role)));
    }
    $("login-button").onclick = async () => { await post("/api/login", {user: $("name").value}); await refresh(); };
    $("send").onsubmit = async (event) => { event.preventDefault(); const text = $("text").value; $("text").value = ""; await post("/api/messages", {text}); await refresh(); };
    $("mode").onchange = async () => { await post("/api/mode", {mode: $("mode").value}); await refresh(); };
    $("conversations-button").onclick = async () => {
      const list = await (await fetch("/api/conversations")).json();
      $("conversations").replaceChildren(...list.list.map((item) => element("li", item)));
    };
    // Each device by its label and last activity; another device's button signs it out by its
    // handle (the page never sees a session id).
    async function showDevices() {
      const devices = await (await fetch("/api/devices")).json();
      $("devices").replaceChildren(...devices.map((device) => {
        const item = element("li", (device.device || "unknown device") + ", active " + new Date(device.lastActivity).toLocaleTimeString() + (device.isCurrent ? " (this one) " : " "));
        if (!device.isCurrent) {
          const button = element("button", "Sign out");
          button.className = "sign-out";
          button.onclick = async () => { await post("/api/devices/end", {handle: device.handle}); await showDevices(); };
          item.append(button);
        }
        return item;
      }));
    }
    $("devices-button").onclick = showDevices;
    $("logout-everywhere").onclick = async () => { await post("/api/logout-everywhere"); await refresh(); };
    refresh(); setInterval(() => refresh().catch(() => {}), 1000);
    """

/// The page's policy: its script and stylesheet come from this origin only, no inline code, no
/// plugins, no `<base>`, no framing.
public let securityPolicy =
    "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

/// Whether `presented` is the admin token, compared in a time that does not depend on where they differ.
public func isAdminToken(_ presented: String, _ token: String) -> Bool {
    let given = Array(presented.utf8)
    let expected = Array(token.utf8)
    var difference: UInt8 = given.count == expected.count ? 0 : 1
    for index in expected.indices { difference |= expected[index] ^ (index < given.count ? given[index] : 0) }
    return difference == 0
}

/// The label of a browser's device, from its `User-Agent`: the browser's and the system's names
/// where they are known (made of fixed names only: nothing the client sent is stored).
public func deviceLabel(userAgent: String?) -> String {
    guard let userAgent else { return "unknown device" }
    let browsers = ["Firefox", "Edg", "Chrome", "Safari", "curl"]
    let systems = ["Android", "iPhone", "iPad", "Windows", "Mac OS X", "Linux"]
    let browser = browsers.first { userAgent.contains($0) }.map { $0 == "Edg" ? "Edge" : $0 } ?? "a browser"
    let system = systems.first { userAgent.contains($0) }.map { $0 == "Mac OS X" ? "macOS" : $0 }
    return system.map { "\(browser) on \($0)" } ?? browser
}
