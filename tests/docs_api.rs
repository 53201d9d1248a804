//! Keeps `docs/api.md` true to the routes the code registers.
//!
//! The routes are read from the source, wherever they are registered: every `.rs` file
//! under `src/` is scanned for actix-web registrations (`.route("/path", web::get()...)`,
//! `web::resource("/path").route(web::post()...)`, `.service(...)`, `web::scope(...)`,
//! `#[get("/path")]`-style macros). A registration the scanner cannot read fails the
//! test, naming its file and line, so no route slips past a form it does not know:
//! teach [`scan`] the new form.
//!
//! The doc lists each route as a heading `### METHOD /path`, with `{name}` for every
//! path parameter (`{path:.*}` is written `{path}`). Every registered route must have its
//! heading, and every such heading must name a registered route. A route that ends in a
//! catch-all parameter (`/api/v1/actors/{path:.*}`, whose handler dispatches on the last
//! segments) is covered by the headings that extend it (`### POST
//! /api/v1/actors/{path}/restart`), one per action the handler takes; a live warden is asked
//! each documented action (none may be answered as unknown), and the unknown-action 404
//! must list exactly the documented POST actions.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

/// A route: method (upper case) and path as the doc writes it.
type Route = (String, String);

/// The mark [`doc_form`] leaves on a path that ends in a catch-all parameter.
const CATCH_ALL: &str = " (catch-all)";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, with each byte's line kept (comments become spaces).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_string = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' && i + 1 < bytes.len() {
                out.push(c as char);
                out.push(bytes[i + 1] as char);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        if c == b'"' {
            in_string = true;
            out.push('"');
            i += 1;
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if c == b'/' && bytes.get(i + 1) == Some(&b'*') {
            while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                out.push(if bytes[i] == b'\n' { '\n' } else { ' ' });
                i += 1;
            }
            out.push_str("  ");
            i += 2;
            continue;
        }
        // keep non-ASCII bytes' width: routes are ASCII
        out.push(if c.is_ascii() { c as char } else { ' ' });
        i += 1;
    }
    out
}

/// The string literal at the start of `text` (after spaces), if there is one.
fn literal(text: &str) -> Option<&str> {
    let text = text.trim_start();
    let rest = text.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// `web::get()` (or another method) at the start of `text`, after spaces.
fn method_call(text: &str) -> Option<&'static str> {
    let rest = text.trim_start().strip_prefix("web::")?;
    METHODS
        .iter()
        .find(|m| rest.starts_with(&format!("{m}()")))
        .copied()
}

/// `{path:.*}` -> `{path}`: the doc writes parameters by name only.
fn doc_form(path: &str) -> String {
    let mut out = String::new();
    let catch_all = path.ends_with(":.*}");
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let inner = &rest[open + 1..open + close];
        let name = inner.split(':').next().unwrap_or(inner);
        out.push('{');
        out.push_str(name);
        out.push('}');
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    if catch_all {
        out.push_str(CATCH_ALL);
    }
    out
}

/// Whether the doc heading `heading` stands for the registered `route`.
fn covers(heading: &Route, route: &Route) -> bool {
    if heading.0 != route.0 {
        return false;
    }
    match route.1.strip_suffix(CATCH_ALL) {
        Some(prefix) => heading.1 == prefix || heading.1.starts_with(&format!("{prefix}/")),
        None => heading.1 == route.1,
    }
}

/// Every route registered in `text` (the file `name`); what it cannot read is pushed to
/// `unreadable` as `file:line: what`.
fn scan(name: &str, text: &str, routes: &mut BTreeSet<Route>, unreadable: &mut Vec<String>) {
    let code = strip_comments(text);
    let line_of = |at: usize| 1 + code[..at].matches('\n').count();
    let mut fail =
        |at: usize, what: &str| unreadable.push(format!("{name}:{}: {what}", line_of(at)));

    // `#[get("/x")]` and friends
    for method in METHODS {
        for (at, _) in code.match_indices(&format!("#[{method}(")) {
            match literal(&code[at + method.len() + 3..]) {
                Some(path) => {
                    routes.insert((method.to_uppercase(), doc_form(path)));
                }
                None => fail(at, &format!("#[{method}(...)] without a path literal")),
            }
        }
    }
    for (at, _) in code.match_indices("web::scope(") {
        fail(
            at,
            "web::scope(...): tests/docs_api.rs does not prefix scoped routes yet; teach scan()",
        );
    }
    for (at, _) in code.match_indices(".service(") {
        let arg = code[at + ".service(".len()..].trim_start();
        if !arg.starts_with("web::resource(") {
            fail(
                at,
                ".service(...) with something other than web::resource(...): \
                 teach tests/docs_api.rs::scan() to read it",
            );
        }
    }
    // the path of the web::resource a `.route(web::get()...)` chain hangs on
    for (at, _) in code.match_indices(".route(") {
        let arg = &code[at + ".route(".len()..];
        if let Some(path) = literal(arg) {
            // `.route("/path", web::get().to(handler))`
            let after = &arg.trim_start()[path.len() + 2..];
            let Some(after) = after.trim_start().strip_prefix(',') else {
                fail(at, ".route(\"...\" without a second argument");
                continue;
            };
            match method_call(after) {
                Some(method) => {
                    routes.insert((method.to_uppercase(), doc_form(path)));
                }
                None => fail(
                    at,
                    &format!(
                        ".route({path:?}, ...) whose second argument is not web::<method>(): \
                         teach tests/docs_api.rs::scan() to read it"
                    ),
                ),
            }
        } else if let Some(method) = method_call(arg) {
            // `web::resource("/path").route(web::get()...)`: the resource is the nearest
            // one before this call in the same statement
            let before = &code[..at];
            let statement_start = before.rfind(';').map_or(0, |s| s + 1);
            match before[statement_start..].rfind("web::resource(") {
                Some(r) => {
                    let r = statement_start + r + "web::resource(".len();
                    match literal(&code[r..]) {
                        Some(path) => {
                            routes.insert((method.to_uppercase(), doc_form(path)));
                        }
                        None => fail(r, "web::resource(...) without a path literal"),
                    }
                }
                None => fail(
                    at,
                    ".route(web::<method>()...) outside a web::resource(...)",
                ),
            }
        } else {
            fail(
                at,
                ".route(...) whose first argument is neither a path literal nor \
                 web::<method>(): teach tests/docs_api.rs::scan() to read it",
            );
        }
    }
}

/// Every route registered under `src/`.
fn registered() -> BTreeSet<Route> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut routes = BTreeSet::new();
    let mut unreadable = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        let name = file
            .strip_prefix(root())
            .unwrap_or(file)
            .display()
            .to_string();
        scan(&name, &text, &mut routes, &mut unreadable);
    }
    assert!(
        unreadable.is_empty(),
        "tests/docs_api.rs cannot read these route registrations (so it cannot check the \
         doc covers them):\n  {}",
        unreadable.join("\n  ")
    );
    routes
}

/// The `### METHOD /path` headings of docs/api.md.
fn documented() -> BTreeSet<Route> {
    let doc = std::fs::read_to_string(root().join("docs/api.md")).expect("read docs/api.md");
    let mut out = BTreeSet::new();
    let mut in_code = false;
    for line in doc.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let Some(heading) = line.strip_prefix("### ").filter(|_| !in_code) else {
            continue;
        };
        let mut words = heading.split_whitespace();
        if let (Some(method), Some(path)) = (words.next(), words.next()) {
            if METHODS.contains(&method.to_lowercase().as_str()) && path.starts_with('/') {
                out.insert((method.to_owned(), path.to_owned()));
            }
        }
    }
    out
}

/// Every route registered under src/ has a `### METHOD /path` heading in docs/api.md,
/// and every such heading names a registered route.
#[test]
fn every_route_is_documented() {
    let routes = registered();
    assert!(
        routes.len() >= 20,
        "found only {} routes under src/: the scanner no longer reads the registrations: {routes:?}",
        routes.len()
    );
    for known in [
        ("GET", "/healthz"),
        ("GET", "/api/v1/spokes/{name}/tree"),
        ("POST", "/api/v1/actors/{path} (catch-all)"),
    ] {
        assert!(
            routes.contains(&(known.0.to_owned(), known.1.to_owned())),
            "the scanner missed {known:?} (found {routes:?})"
        );
    }
    let doc = documented();
    let missing: Vec<String> = routes
        .iter()
        .filter(|r| !doc.iter().any(|h| covers(h, r)))
        .map(|(m, p)| match p.strip_suffix(CATCH_ALL) {
            Some(p) => format!("`### {m} {p}/<each action>`"),
            None => format!("`### {m} {p}`"),
        })
        .collect();
    let stale: Vec<String> = doc
        .iter()
        .filter(|h| !routes.iter().any(|r| covers(h, r)))
        .map(|(m, p)| format!("`### {m} {p}`"))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/api.md is out of step with the routes under src/:\n  routes without a heading \
         (add one with auth, body, statuses and example JSON): {}\n  headings without a \
         route (a typo, or a feature not built yet): {}",
        missing.join(", "),
        stale.join(", ")
    );
}

/// The scanner reads every registration form it claims to, and refuses the others.
#[test]
fn the_route_scanner_reads_and_refuses() {
    let mut routes = BTreeSet::new();
    let mut unreadable = Vec::new();
    let code = r#"
        // .route("/commented", web::get().to(x))
        cfg.route("/a/{path:.*}", web::get().to(a))
            .route(
                "/b",
                web::post().to(b),
            )
            .service(web::resource("/c").route(web::delete().to(c)).route(web::put().to(d)));
        #[get("/e")]
        async fn e() {}
    "#;
    scan("x.rs", code, &mut routes, &mut unreadable);
    let expected: BTreeSet<Route> = [
        ("GET", "/a/{path} (catch-all)"),
        ("POST", "/b"),
        ("DELETE", "/c"),
        ("PUT", "/c"),
        ("GET", "/e"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_owned(), p.to_owned()))
    .collect();
    assert_eq!(routes, expected);
    assert!(unreadable.is_empty(), "{unreadable:?}");

    for odd in [
        r#"cfg.route(PATH, web::get().to(a));"#,
        r#"cfg.service(web::scope("/ui").route("/x", web::get().to(a)));"#,
        r#"cfg.service(actix_files::Files::new("/ui", "."));"#,
        r#"cfg.route("/x", web::route().guard(g).to(a));"#,
    ] {
        let mut unreadable = Vec::new();
        scan("odd.rs", odd, &mut BTreeSet::new(), &mut unreadable);
        assert!(!unreadable.is_empty(), "the scanner should refuse: {odd}");
    }
}

/// The `op`s of the control socket, as serde names them: the loader's own "expected one
/// of" list for an unknown op, so a request added to the protocol is seen here.
fn control_ops() -> BTreeSet<String> {
    let err = serde_json::from_str::<warden::control::protocol::Request>(r#"{"op": "no-such-op"}"#)
        .expect_err("an unknown op is refused");
    let text = err.to_string();
    let list = text
        .split("expected one of ")
        .nth(1)
        .unwrap_or_else(|| panic!("serde's message lists the ops: {text}"));
    list.split(',')
        .filter_map(|item| item.trim().strip_prefix('`'))
        .filter_map(|item| item.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// The `op`s the doc's control-socket table names (first column, each `op` in backticks).
fn documented_ops() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(root().join("docs/api.md")).expect("docs/api.md");
    let table = doc
        .split("| `op` | fields |")
        .nth(1)
        .expect("docs/api.md has the control socket's `op` table");
    table
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every request of the control socket is in docs/api.md's table, and the table names no
/// request the protocol does not have.
#[test]
fn every_control_socket_op_is_documented() {
    let ops = control_ops();
    assert!(
        ops.len() >= 20 && ops.contains("health") && ops.contains("wait"),
        "read the ops: {ops:?}"
    );
    let documented = documented_ops();
    let missing: Vec<_> = ops.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&ops).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/api.md's control socket table: missing {missing:?}, names unknown {unknown:?}"
    );
}

/// The action headings of the catch-all actor routes: (method, the part after
/// `/api/v1/actors/{path}/`), e.g. `("POST", "deploys/{id}/confirm")`.
fn documented_actions() -> BTreeSet<Route> {
    documented()
        .into_iter()
        .filter_map(|(method, path)| {
            let action = path.strip_prefix("/api/v1/actors/{path}/")?;
            Some((method, action.to_owned()))
        })
        .collect()
}

/// Every action the doc gives the catch-all actor routes is taken by a live warden (the
/// handlers dispatch on the path's last segments by hand, so the route table alone does
/// not show them): none is answered as an unknown action or actor, and the 404 for an
/// unknown action lists exactly the documented POST actions.
#[test]
fn every_documented_actor_action_is_taken_by_a_live_warden() {
    let actions = documented_actions();
    assert!(
        actions.len() >= 8,
        "found only {actions:?} under `### METHOD /api/v1/actors/{{path}}/...`"
    );
    let w = support::Warden::start(
        "[[service]]\nname = \"api\"\ncommand = [\"sleep\", \"100000\"]\n\
         [service.deploy]\nrepo = \"acme/api\"\nsteps = [[\"true\"]]\n",
    );
    w.wait_state("/api", "running", std::time::Duration::from_secs(20));
    for (method, action) in &actions {
        let route = format!("/api/v1/actors/api/{}", action.replace("{id}", "0000"));
        let r = w.req(method, &route);
        let text = r.text();
        let unknown =
            r.status == 404 && (text.contains("no such action") || text.contains("no actor"));
        assert!(
            !unknown && r.status != 405,
            "{method} {route}: {} {text}",
            r.status
        );
    }
    let r = w.req("POST", "/api/v1/actors/api/frobnicate");
    assert_eq!(r.status, 404, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_owned();
    let listed: BTreeSet<String> = error
        .split_once("expected ")
        .map(|(_, list)| list)
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|word| !word.is_empty() && *word != "or")
        .map(|word| word.replace("ID", "{id}"))
        .collect();
    let posted: BTreeSet<String> = actions
        .iter()
        .filter(|(method, _)| method == "POST")
        .map(|(_, action)| action.clone())
        .collect();
    assert_eq!(
        listed, posted,
        "the unknown-action 404 ({error}) against the doc"
    );
}
