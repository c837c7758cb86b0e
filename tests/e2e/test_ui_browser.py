"""The web UI (issue #7) in a real browser: headless Chromium (Debian's `chromium`, driven by
Playwright through `executable_path` — Playwright's own browser download is never used).

Real peers only: the test OpenID provider (tests/testbed/idp) for sign-in and as the
authorization server of an `oauth_connect` upstream (upstreams/protected_upstream.py), and
`tessera serve` with that brokered server. The browser signs in through the provider's login and
consent pages, connects the upstream through its consent page, disconnects it, reads the
activity log, creates and revokes a token, and visits the admin pages as a non-admin (alice) and
as an admin (carol).

Every response the browser received (bodies and headers other than Set-Cookie) and every page
source taken along the way is scanned for the secrets the suite knows: client secrets, the
sealing key, the browser's session cookie, callers' tokens and the access token Tessera obtained
for alice at the upstream (read from the upstream's header record). The one exception is a
personal access token in the response that created it and on the page that shows it once.
Screenshots are kept under each test's tmp dir; their paths are printed.
"""

from __future__ import annotations

import concurrent.futures
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from brokered import (
    PASSWORDS,
    SESSION_COOKIE,
    Upstream,
    call,
    caller_token,
    connect_server,
    gateway_auth,
    inbound,
    new_secrets,
    provider_config,
    sdk_client,
    start_protected_upstream,
    wait_gateway_listening,
)
from conftest import (
    INBOUND_CREDENTIALS,
    SEP,
    USED_SECRETS,
    Gateway,
    ProcessRegistry,
    free_port,
    register_secret,
    start_gateway,
)
from idp import IdP  # noqa: E402 - brokered puts tests/testbed on sys.path

CONNECT = "notes_connect"
ALLOWED = ["alice@example.com", "bob@example.com", "carol@example.com"]
ADMIN = "carol@example.com"
TIMEOUT_MS = 20_000


def chromium_path() -> str:
    """Debian's chromium, or a clear failure (never a skip): scripts/test-all installs it."""
    path = os.environ.get("TESSERA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path and not os.access(path, os.X_OK):
        pytest.fail(f"TESSERA_CHROMIUM={path} is not an executable file", pytrace=False)
    if not path:
        pytest.fail("the browser tests need Debian's chromium (`apt-get install chromium`; scripts/test-all installs it "
                    "when missing) — or set TESSERA_CHROMIUM to a Chromium binary", pytrace=False)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed in {sys.executable} ({exc}): "
                    "pip install -r tests/e2e/requirements.txt (scripts/test-all does)", pytrace=False)
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        except Exception as exc:  # noqa: BLE001 - reported as the failure it is
            pytest.fail(f"headless chromium ({exe}) did not start under Playwright: {exc}", pytrace=False)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Env:
    idp: IdP
    gw: Gateway
    up: Upstream
    signin_secret: str
    tmp: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The provider, one protected upstream behind `oauth_connect`, and Tessera (carol is admin)."""
    tmp = tmp_path_factory.mktemp("ui")
    logs = tmp / "logs"
    port = free_port()
    signin_secret, broker_secrets, sealing_key = new_secrets()
    reg = ProcessRegistry()
    old_key = os.environ.get("TESSERA_SEALING_KEY")
    os.environ["TESSERA_SEALING_KEY"] = sealing_key
    try:
        with IdP(config=provider_config(port, signin_secret, broker_secrets, [CONNECT]), log_dir=logs) as idp:
            up = start_protected_upstream(reg, idp.issuer, logs, CONNECT)
            servers = {CONNECT: connect_server(idp, up, broker_secrets["broker-connect"], ALLOWED)}
            auth = {**gateway_auth(idp, port, signin_secret), "admin_emails": [ADMIN]}
            extra = {"auth": auth, "public_url": f"http://127.0.0.1:{port}"}
            gw = start_gateway(reg, tmp / "gw", servers, extra=extra, wait_ready=False, port=port)
            wait_gateway_listening(gw, [])
            yield Env(idp, gw, up, signin_secret, tmp)
    finally:
        reg.stop_all()
        if old_key is None:
            os.environ.pop("TESSERA_SEALING_KEY", None)
        else:
            os.environ["TESSERA_SEALING_KEY"] = old_key


# ------------------------------------------------------------------ the browser session


@dataclass
class Seen:
    """What one browser context received: every response and the page sources we took."""

    responses: list[tuple[str, int, dict[str, str], bytes | None]] = field(default_factory=list)
    pages: list[tuple[str, str]] = field(default_factory=list)
    shots: list[Path] = field(default_factory=list)
    allowed: dict[str, set[str]] = field(default_factory=dict)  # secret -> URLs allowed to carry it


class Browser:
    def __init__(self, browser: Any, env: Env, out: Path) -> None:
        from playwright.sync_api import expect

        expect.set_options(timeout=TIMEOUT_MS)
        self.expect = expect
        self.env = env
        self.out = out
        self.seen = Seen()
        self.context = browser.new_context(base_url=env.gw.base, viewport={"width": 1200, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.page.on("response", self._record)
        self.console_errors: list[str] = []
        # Script errors only: a failed request is judged by `unexpected_failures` (the browser also
        # logs the expected 401 of a signed-out /api/v1/me and 403s as console errors).
        self.page.on("console", lambda m: self.console_errors.append(m.text)
                     if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(f"page error: {e}"))

    def _record(self, response: Any) -> None:
        body: bytes | None = None
        if not (300 <= response.status < 400):
            try:
                body = response.body()
            except Exception:  # noqa: BLE001 - a body the browser already dropped: headers still count
                body = None
        headers = {k: v for k, v in response.headers.items() if k.lower() != "set-cookie"}
        self.seen.responses.append((response.url, response.status, headers, body))

    def snapshot(self, name: str) -> Path:
        """Page source kept for the secret scan, and a full-page screenshot kept as an artifact."""
        self.seen.pages.append((f"{name} ({self.page.url})", self.page.content()))
        path = self.out / f"{len(self.seen.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.seen.shots.append(path)
        print(f"screenshot: {path}")
        return path

    def idp_pages(self, user: str, consent: str = "approve") -> None:
        """Whatever the provider shows next — login form, consent page — until the browser is back
        at Tessera."""
        page, gw = self.page, self.env.gw
        for _ in range(4):
            back = page.locator("main#result, #connections-h:visible, #signin-h:visible")
            login = page.locator("input[name=username]")
            decision = page.locator(f"#{consent}")
            self.expect(back.or_(login).or_(decision).first).to_be_visible()
            if page.url.startswith(gw.base):
                return
            if login.is_visible():
                login.fill(user)
                page.locator("input[name=password]").fill(PASSWORDS[user])
                page.get_by_role("button", name="Sign in").click()
            else:
                decision.click()
            page.wait_for_load_state()
        raise AssertionError(f"the provider did not send the browser back to Tessera (at {page.url})")

    def sign_in(self, user: str) -> None:
        page = self.page
        page.goto("/")
        self.expect(page.locator("#signin-h")).to_be_visible()
        self.snapshot("signed-out")
        page.get_by_role("link", name="Sign in").click()
        self.idp_pages(user)
        self.expect(page.locator("#connections-h")).to_be_visible()
        self.expect(page.locator("#who-name")).to_have_text(f"{user}@example.com")
        for c in self.context.cookies():
            if c["name"] == SESSION_COOKIE:
                assert c["httpOnly"], "the session cookie is readable by scripts"
                inbound(c["value"])

    def goto_section(self, name: str) -> None:
        self.page.get_by_role("navigation", name="Sections").get_by_role("link", name=name).click()
        section = self.page.locator(f"#{name.lower()}")
        self.expect(section).to_be_visible()
        self.expect(section).to_have_attribute("data-loaded", "1")

    def close(self) -> None:
        self.context.close()

    def unexpected_failures(self, expected: set[tuple[int, str]]) -> list[str]:
        """Gateway responses of 400 and above other than the expected (status, path) pairs."""
        out = []
        for url, status, _, _ in self.seen.responses:
            if status >= 400 and url.startswith(self.env.gw.base):
                path = url[len(self.env.gw.base):].split("?")[0]
                if (status, path) not in expected:
                    out.append(f"{status} {url}")
        return out

    def leaked(self) -> list[str]:
        """Every place a known secret showed up in what this browser received or displayed."""
        secrets = {s for s in USED_SECRETS | INBOUND_CREDENTIALS if len(s) >= 8}
        problems = []
        for url, status, headers, body in self.seen.responses:
            text = (body or b"").decode("utf-8", "replace") + "\n" + "\n".join(f"{k}: {v}" for k, v in headers.items())
            for s in secrets:
                if s in text and url not in self.seen.allowed.get(s, set()):
                    problems.append(f"response {status} {url} carries a secret ({s[:6]}…)")
        for where, html in self.seen.pages:
            for s in secrets:
                if s in html and where not in self.seen.allowed.get(s, set()):
                    problems.append(f"page {where} shows a secret ({s[:6]}…)")
        return problems


@pytest.fixture
def make_browser(browser: Any, env: Env, tmp_path: Path) -> Iterator[Any]:
    made: list[Browser] = []

    def make() -> Browser:
        b = Browser(browser, env, tmp_path)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def brokered_tokens_seen_upstream(up: Upstream) -> set[str]:
    """The credentials Tessera sent to the upstream (from its header record)."""
    out = set()
    for rec in up.recorded():
        auth = rec["headers"].get("authorization", "")
        if auth.lower().startswith("bearer "):
            out.add(auth[7:].strip())
    return out


def whoami_as(env: Env, user: str) -> Any:
    """One tool call as `user` through Tessera's /mcp (in its own thread: Playwright's sync API
    owns this one's event loop)."""
    token = caller_token(env.idp, env.gw, user, env.signin_secret)

    async def go() -> Any:
        async with sdk_client(env.gw, token) as client:
            return await call(client, f"{CONNECT}{SEP}whoami")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, go).result(timeout=60)


def back_to_ui(b: Browser, outcome: str) -> None:
    """After the provider: the callback either sends the browser to the UI itself or shows its
    own result page (`#result[data-outcome]`), from which the browser goes back to `/`."""
    page = b.page
    if page.locator("main#result").count():
        b.expect(page.locator("main#result")).to_have_attribute("data-outcome", outcome)
        b.snapshot(f"connect-callback-{outcome}")
        link = page.get_by_role("link", name="Tessera")
        if link.count():
            link.first.click()
        else:
            page.goto("/")
    b.expect(page.locator("#connections-h")).to_be_visible()


def row(b: Browser, table: str, server: str) -> Any:
    return b.page.locator(f"#{table} tbody tr[data-server='{server}']")


# ------------------------------------------------------------------ tests


def test_alice_connects_disconnects_and_reads_her_activity(browser: Any, env: Env, make_browser: Any) -> None:
    """Sign in through the provider; Connections lists the oauth_connect server as not connected;
    Connect goes through the provider's consent page and back, the banner and the row say
    connected, and a tool call through /mcp now works as alice; Disconnect (DELETE, CSRF-checked)
    makes it not connected again; Activity shows the connect and disconnect rows and filters by
    type; no secret reaches the browser."""
    b = make_browser()
    page, expect = b.page, b.expect
    b.sign_in("alice")
    # The page is served with a policy that allows nothing but the gateway itself (no inline
    # script: the tests' console check would report any refusal).
    policies = [h.get("content-security-policy", "") for url, status, h, _ in b.seen.responses
                if url.rstrip("/") == env.gw.base and status == 200]
    assert policies and all("default-src 'self'" in p and "frame-ancestors 'none'" in p for p in policies), policies
    r = row(b, "connections-table", CONNECT)
    expect(r).to_have_attribute("data-status", "not_connected")
    expect(r.get_by_role("link", name=f"Connect {CONNECT}")).to_be_visible()
    b.snapshot("connections-not-connected")

    r.get_by_role("link", name=f"Connect {CONNECT}").click()
    b.idp_pages("alice")
    back_to_ui(b, "connected")
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#banner-text")).to_contain_text(f"{CONNECT} is connected")
    r = row(b, "connections-table", CONNECT)
    expect(r).to_have_attribute("data-status", "connected")
    expect(r.locator(".status")).to_contain_text("connected")
    b.snapshot("connections-connected")

    for _ in range(2):  # each call is one tool_call activity row (enough rows to page through below)
        out = whoami_as(env, "alice")
        assert out.kind == "ok", f"a tool call after connecting in the browser failed: {out.describe()}"
    for t in brokered_tokens_seen_upstream(env.up):
        register_secret(t)
    assert brokered_tokens_seen_upstream(env.up), "the upstream saw no bearer credential"

    r.get_by_role("button", name=f"Disconnect {CONNECT}").click()
    expect(page.locator("#banner-text")).to_contain_text(f"Disconnected {CONNECT}")
    expect(r).to_have_attribute("data-status", "not_connected")
    expect(r.get_by_role("button", name=f"Disconnect {CONNECT}")).to_have_count(0)
    b.snapshot("connections-disconnected")

    b.goto_section("Activity")
    rows = page.locator("#activity-table tbody tr")
    expect(rows.and_(page.locator(f"[data-server='{CONNECT}'][data-type='connect_finish'][data-outcome='success']"))).not_to_have_count(0)
    expect(rows.and_(page.locator(f"[data-server='{CONNECT}'][data-type='disconnect']"))).not_to_have_count(0)
    # Newest first: the disconnect row comes before the connect_finish row.
    types = rows.evaluate_all("rs => rs.map(r => r.dataset.type)")
    assert types.index("disconnect") < types.index("connect_finish"), types
    expect(page.locator("#activity-table thead th", has_text="User")).to_be_hidden()  # her own only
    b.snapshot("activity")

    # Pages of 5 through the cursor: "Older entries" appends the next page, no row twice, and
    # the whole list is what one big page shows, in the same order.
    everything = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert len(everything) > 5, f"expected more than 5 activity rows for alice, got {len(everything)}"
    page.get_by_label("Per page").select_option("5")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(rows).to_have_count(5)
    for _ in range(20):
        if not page.get_by_role("button", name="Older entries").is_visible():
            break
        page.get_by_role("button", name="Older entries").click()
        expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    paged = rows.evaluate_all("rs => rs.map(r => r.dataset.id)")
    assert paged == everything, f"cursor pages {paged} differ from one page {everything}"
    b.snapshot("activity-paged")

    page.get_by_label("Per page").select_option("50")
    page.get_by_label("Type").select_option("disconnect")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(rows.first).to_have_attribute("data-type", "disconnect")
    kinds = set(rows.evaluate_all("rs => rs.map(r => r.dataset.type)"))
    assert kinds == {"disconnect"}, f"the type filter let through {kinds}"
    b.snapshot("activity-filtered")

    # Time window: everything is before tomorrow and nothing is after it.
    tomorrow = page.evaluate("() => { const d = new Date(Date.now() + 86400000); d.setSeconds(0, 0);"
                             " return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16); }")
    page.get_by_label("Until").fill(tomorrow)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(rows.first).to_have_attribute("data-type", "disconnect")
    page.get_by_label("Until").fill("")
    page.get_by_label("Since").fill(tomorrow)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(rows).to_have_count(0)
    expect(page.locator("#activity-empty")).to_be_visible()

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])
    print("screenshots:\n" + "\n".join(str(p) for p in b.seen.shots))


def test_tokens_are_shown_once_and_revocable(browser: Any, env: Env, make_browser: Any) -> None:
    """Create a personal access token in the Tokens section: the token is shown once (in the
    response that created it and in the one-time box), the list shows only its prefix, Done and a
    reload leave no trace of it, Regenerate shows a new one once and revokes the old one, and
    Revoke marks it revoked."""
    b = make_browser()
    page, expect = b.page, b.expect
    b.sign_in("bob")
    b.goto_section("Tokens")
    page.get_by_label("Name").fill("ui laptop")
    page.get_by_label("Expires in").select_option("7d")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/user/tokens") and r.request.method == "POST") as created:
        page.get_by_role("button", name="Create token").click()
    assert created.value.status == 201, created.value.status
    token = created.value.json()["token"]
    inbound(token)
    b.seen.allowed[token] = {created.value.url}
    box = page.locator("#token-created")
    expect(box).to_be_visible()
    expect(page.locator("#token-value")).to_have_value(token)
    b.seen.pages.append(("token shown once", page.content()))
    b.seen.allowed[token].add("token shown once")
    shot = b.out / f"{len(b.seen.shots) + 1:02d}-tokens-created-value-masked.png"
    page.screenshot(path=str(shot), full_page=True, mask=[page.locator("#token-value")])
    b.seen.shots.append(shot)
    print(f"screenshot: {shot}")
    listed = page.locator("#tokens-table tbody tr", has_text="ui laptop")
    expect(listed).to_have_attribute("data-status", "active")
    assert token not in listed.inner_text()

    page.get_by_role("button", name="Done").click()
    expect(box).to_be_hidden()
    expect(page.locator("#token-value")).to_have_value("")
    page.reload()
    expect(page.locator("#tokens")).to_have_attribute("data-loaded", "1")
    assert token not in page.content()

    # Regenerate: a new token, shown once like a created one; the old row is revoked.
    with page.expect_response(lambda r: r.url.endswith("/regenerate") and r.request.method == "POST") as regenerated:
        listed.get_by_role("button", name="Regenerate ui laptop").click()
    assert regenerated.value.status == 201, regenerated.value.status
    new_token = regenerated.value.json()["token"]
    inbound(new_token)
    assert new_token != token
    b.seen.allowed[new_token] = {regenerated.value.url, "token regenerated"}
    expect(page.locator("#token-value")).to_have_value(new_token)
    b.seen.pages.append(("token regenerated", page.content()))
    page.get_by_role("button", name="Done").click()
    expect(page.locator("#token-value")).to_have_value("")
    rows = page.locator("#tokens-table tbody tr", has_text="ui laptop")
    expect(rows).to_have_count(2)
    expect(rows.and_(page.locator("[data-status='revoked']"))).to_have_count(1)
    rows.and_(page.locator("[data-status='active']")).get_by_role("button", name="Revoke ui laptop").click()
    expect(rows.and_(page.locator("[data-status='revoked']"))).to_have_count(2)
    assert new_token not in page.content()
    b.snapshot("tokens-revoked")

    # Keyboard only: the first Tab reaches the skip link; Enter on a nav link opens the section
    # and moves focus to its heading.
    page.goto("/")
    expect(page.locator("#connections")).to_have_attribute("data-loaded", "1")
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Activity").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#activity-h")).to_be_focused()

    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#signin-h")).to_be_visible()
    assert not any(c["name"] == SESSION_COOKIE for c in b.context.cookies()), "the session cookie outlived sign-out"

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])


def test_a_denied_connect_says_so_and_changes_nothing(browser: Any, env: Env, make_browser: Any) -> None:
    """bob denies at the provider's consent page: back in the UI the banner says the server was
    not connected (an error), the row is still not connected with its Connect link, and the
    activity log has a connect_deny row."""
    b = make_browser()
    page, expect = b.page, b.expect
    b.sign_in("bob")
    r = row(b, "connections-table", CONNECT)
    r.get_by_role("link", name=f"Connect {CONNECT}").click()
    b.idp_pages("bob", consent="deny")
    back_to_ui(b, "access_denied")
    expect(page.locator("#banner")).to_have_attribute("data-kind", "error")
    expect(page.locator("#banner-text")).to_contain_text(f"{CONNECT} was not connected")
    expect(r).to_have_attribute("data-status", "not_connected")
    expect(r.get_by_role("link", name=f"Connect {CONNECT}")).to_be_visible()
    b.snapshot("connect-denied")
    b.goto_section("Activity")
    expect(page.locator(f"#activity-table tbody tr[data-type='connect_deny'][data-server='{CONNECT}']")).not_to_have_count(0)

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])


def test_a_non_admin_sees_no_admin_data(browser: Any, env: Env, make_browser: Any) -> None:
    """alice has no Users link; opening #users answers 403 at the API and the page says so
    without rows; Servers lists her servers without the gateway's health or session counts."""
    b = make_browser()
    page, expect = b.page, b.expect
    b.sign_in("alice")
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Users")).to_have_count(0)
    with page.expect_response(lambda r: "/api/v1/admin/users" in r.url) as users:
        page.goto("/#users")
    assert users.value.status == 403, f"/api/v1/admin/users as a non-admin: {users.value.status}"
    expect(page.locator("#users-error")).to_be_visible()
    expect(page.locator("#users-error")).to_contain_text("administrators")
    expect(page.locator("#users-table tbody tr")).to_have_count(0)
    b.snapshot("users-forbidden")

    b.goto_section("Servers")
    expect(row(b, "servers-table", CONNECT)).to_be_visible()
    expect(page.locator("#gateway-summary")).to_be_hidden()
    expect(page.locator("#servers-table thead th", has_text="Health")).to_be_hidden()
    b.snapshot("servers-user")

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me"), (403, "/api/v1/admin/users")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])


def test_an_admin_sees_users_servers_and_everyones_activity(browser: Any, env: Env, make_browser: Any) -> None:
    """carol (admin_emails) sees the Users page with alice, bob and herself, server health and
    the gateway's session count, and everyone's activity (a User column naming alice by email),
    filterable by user (alice: only her rows; carol: none); on the Admin page she ends bob's live
    MCP session."""
    b = make_browser()
    page, expect = b.page, b.expect
    b.sign_in("carol")
    expect(page.locator("#who-role")).to_have_text("admin")
    b.goto_section("Users")
    users = page.locator("#users-table tbody")
    for who in ("alice@example.com", "bob@example.com", "carol@example.com"):
        expect(users).to_contain_text(who)
    b.snapshot("admin-users")

    b.goto_section("Servers")
    expect(row(b, "servers-table", CONNECT)).to_be_visible()
    expect(page.locator("#gateway-summary")).to_contain_text("client session")
    b.snapshot("admin-servers")

    b.goto_section("Activity")
    expect(page.locator("#activity-table thead th", has_text="User")).to_be_visible()
    rows = page.locator("#activity-table tbody tr")
    expect(rows.and_(page.locator(f"[data-server='{CONNECT}'][data-type='disconnect']"))).not_to_have_count(0)
    expect(rows.filter(has_text="alice@example.com").first).to_be_visible()  # users named by email
    page.get_by_label("User", exact=True).select_option(label="alice@example.com")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(rows.first).to_be_visible()
    users = set(rows.evaluate_all("rs => rs.map(r => r.cells[1].textContent)"))
    assert users == {"alice@example.com"}, f"the user filter let through {users}"
    page.get_by_label("User", exact=True).select_option(label="carol@example.com")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#activity")).to_have_attribute("data-loaded", "1")
    expect(page.locator("#activity-empty")).to_be_visible()
    b.snapshot("admin-activity")

    # Admin: the dashboard, and bob's live MCP session (its client named), ended with its button.
    bob_token = caller_token(env.idp, env.gw, "bob", env.signin_secret)
    mcp_headers = {"Authorization": f"Bearer {bob_token}", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "ui-kick", "version": "7"}}}
    r = httpx.post(env.gw.mcp_url, json=init, headers=mcp_headers, timeout=30)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert httpx.post(env.gw.mcp_url, json=ping, headers={**mcp_headers, "Mcp-Session-Id": sid}, timeout=30).status_code == 200
    b.goto_section("Admin")
    expect(page.locator("#dashboard")).to_contain_text("MCP sessions")
    live = page.locator("#mcp-sessions-table tbody tr", has_text="ui-kick 7")
    expect(live).to_contain_text("bob@example.com")
    assert sid not in page.content(), "a session id reached the admin page"
    b.snapshot("admin-page")
    with page.expect_response(lambda r: "/api/v1/admin/mcp-sessions/" in r.url and r.request.method == "DELETE") as ended:
        live.get_by_role("button", name="End").click()
    assert ended.value.status == 200, ended.value.text()
    expect(live).to_have_count(0)
    r = httpx.post(env.gw.mcp_url, json=ping, headers={**mcp_headers, "Mcp-Session-Id": sid}, timeout=30)
    assert r.status_code == 404, f"the ended session still answers: {r.status_code}"

    # Restart an upstream from the Admin page's upstream table.
    with page.expect_response(lambda r: r.url.endswith(f"/api/v1/admin/servers/{CONNECT}/restart")) as restarted:
        page.get_by_role("button", name=f"Restart {CONNECT}").click()
    assert restarted.value.status == 200, restarted.value.text()
    assert restarted.value.json()["success"] is True
    expect(page.locator("#banner-text")).to_contain_text(f"Restarted {CONNECT}")

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])


def test_servers_personal_form_and_my_switch(browser: Any, env: Env, make_browser: Any) -> None:
    """Servers section: a personal server added through the form (with a header whose value never
    comes back to the page), a private address refused with the reason shown, the shared
    server switched off for me and on again — each checked against the REST API."""
    b = make_browser()
    page, expect = b.page, b.expect
    header_value = register_secret("ui-header-" + secrets.token_urlsafe(12))
    b.sign_in("bob")
    b.goto_section("Servers")

    # Refused: a link-local address (cloud metadata); the reason is shown, nothing is added.
    page.get_by_label("New server").fill("meta")
    page.get_by_label("URL (http or https)").fill("http://169.254.169.254/mcp")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/user/servers") and r.request.method == "POST") as refused:
        page.get_by_role("button", name="Add server").click()
    assert refused.value.status == 400, refused.value.status
    expect(page.locator("#personal-error")).to_contain_text("169.254.169.254")

    # Added: a public address, with a header.
    page.get_by_label("New server").fill("bobs-own")
    page.get_by_label("URL (http or https)").fill("http://93.184.216.34/mcp")
    page.get_by_role("button", name="Add header").click()
    page.get_by_label("Header 1 field").fill("X-Api-Key")
    page.get_by_label("Header 1 value").fill(header_value)
    with page.expect_response(lambda r: r.url.endswith("/api/v1/user/servers") and r.request.method == "POST") as created:
        page.get_by_role("button", name="Add server").click()
    assert created.value.status == 201, created.value.text()
    row = page.locator("#personal-table tbody tr", has_text="bobs-own")
    expect(row).to_contain_text("X-Api-Key")
    assert header_value not in page.content()
    page.reload()
    expect(page.locator("#personal-table tbody tr", has_text="bobs-own")).to_be_visible()
    assert header_value not in page.content()
    # Its live state: bob never used it over MCP, so it is not connected (from diagnostics).
    expect(page.locator("#personal-table tbody tr", has_text="bobs-own").locator("td.state")).to_have_text("not connected")
    b.snapshot("servers-personal-added")

    # My switch for the shared server: off, then on again; its state for me follows.
    shared_state = page.locator(f"#servers-table tbody tr[data-server='{CONNECT}'] td.state")
    expect(shared_state).not_to_have_text("switched off")
    switch = page.get_by_role("button", name=f"{CONNECT} on for me")
    expect(switch).to_have_attribute("aria-pressed", "true")
    switch.click()
    expect(switch).to_have_attribute("aria-pressed", "false")
    expect(shared_state).to_have_text("switched off")
    listed = page.evaluate("fetch('/api/v1/user/servers').then(r => r.json())")
    mine = {s["name"]: s for s in listed["shared"]}
    assert mine[CONNECT]["user_enabled"] is False, listed
    switch.click()
    expect(switch).to_have_attribute("aria-pressed", "true")
    expect(shared_state).not_to_have_text("switched off")

    # The OAuth connect settings must be JSON: checked in the page, nothing sent, nothing echoed.
    page.locator("#p-broker summary").click()
    page.get_by_label("New server").fill("bobs-oauth")
    page.get_by_label("URL (http or https)").fill("http://93.184.216.34/mcp")
    page.get_by_label("OAuth connect settings (JSON)").fill('{"mode": "oauth_connect", "client_secret": "' + header_value)
    page.get_by_role("button", name="Add server").click()
    expect(page.locator("#personal-error")).to_contain_text("not valid JSON")
    assert header_value not in page.locator("#personal-error").inner_text()
    expect(page.locator("#personal-table tbody tr", has_text="bobs-oauth")).to_have_count(0)
    page.get_by_label("OAuth connect settings (JSON)").fill("")

    page.on("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Delete bobs-own").click()
    expect(page.locator("#personal-table tbody tr", has_text="bobs-own")).to_have_count(0)

    assert not b.console_errors, f"browser console errors: {b.console_errors}"
    failures = b.unexpected_failures({(401, "/api/v1/me"), (400, "/api/v1/user/servers")})
    assert not failures, f"unexpected failed requests: {failures}"
    leaks = b.leaked()
    assert not leaks, "secrets reached the browser:\n" + "\n".join(leaks[:20])
