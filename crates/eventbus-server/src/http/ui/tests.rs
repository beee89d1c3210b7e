//! The console in-process (`tower::ServiceExt::oneshot`) against the real
//! Redis and PostgreSQL: login refusals, the session cookie, CSRF and
//! read-only refusals, cross-site refusals, and hostile event data escaped
//! on every page that shows it. The browser tests (`tests/ui.rs`) drive
//! the same pages in Chromium.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use eventbus::deadletter::{DeadLetterWriter, Failure};
use eventbus::{Envelope, ErrorClass};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::http::tests::{fixture, Fixture, ADMIN, READ};

/// What a request got back.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

async fn send(
    app: &Router,
    method: Method,
    uri: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "console.test");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    if form.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let req = req
        .body(form.map_or_else(Body::empty, |f| Body::from(f.to_owned())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `GET uri` in a session.
async fn get(app: &Router, uri: &str, cookie: &str) -> Answer {
    send(app, Method::GET, uri, Some(cookie), None).await
}

/// `POST uri` with a form body.
async fn post(app: &Router, uri: &str, cookie: &str, form: &str) -> Answer {
    send(app, Method::POST, uri, Some(cookie), Some(form)).await
}

/// Logs in with `token`; returns the `name=value` of the session cookie.
async fn login(app: &Router, token: &str) -> String {
    let a = send(
        app,
        Method::POST,
        "/ui/login",
        None,
        Some(&format!("token={token}&next=/ui/dlq")),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER, "{}", a.body);
    assert_eq!(a.headers[header::LOCATION], "/ui/dlq");
    let cookie = a.headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing in {cookie}"
        );
    }
    assert!(
        !cookie.contains(token),
        "the cookie holds the token: {cookie}"
    );
    cookie.split(';').next().unwrap().to_owned()
}

/// The CSRF token of the first form on a page.
fn csrf(page: &str) -> String {
    let at =
        page.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
    page[at..at + 64].to_owned()
}

async fn dead_letter(f: &Fixture, key: &str, data: serde_json::Value, message: &str) -> uuid::Uuid {
    let writer = DeadLetterWriter::new(
        f.state.redis.clone(),
        &f.state.topology,
        f.db.as_ref()
            .map(|db| (db.pool().clone(), db.schema().clone())),
    );
    writer
        .record(&Failure {
            envelope: Envelope::new("work_item.hostile", key, data),
            group: "billing".into(),
            consumer: "c1".into(),
            stream: f.state.topology.stream_key("work_item", 0),
            partition: 0,
            entry_id: "1-0".into(),
            attempts: 3,
            class: ErrorClass::Permanent,
            message: message.into(),
            first_failed_at: None,
            raw_fields: None,
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn login_refuses_wrong_tokens_without_echoing_them() {
    let f = fixture(false).await;
    let app = f.app();
    let a = send(&app, Method::GET, "/ui", None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.body.contains(r#"name="token""#),
        "no login form: {}",
        a.body
    );
    assert!(!a.body.contains(ADMIN) && !a.body.contains(READ));
    let deep = send(&app, Method::GET, "/ui/dlq?group=billing", None, None).await;
    assert_eq!(deep.status, StatusCode::UNAUTHORIZED);
    assert!(
        deep.body.contains(r#"value="/ui/dlq?group=billing""#),
        "{}",
        deep.body
    );

    let wrong = "Wrong-Token-Sentinel-4242";
    for form in [
        format!("token={wrong}"),
        "token=".into(),
        String::new(),
        format!("token={}x", &ADMIN[..ADMIN.len() - 1]),
    ] {
        let a = send(&app, Method::POST, "/ui/login", None, Some(&form)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{form}");
        assert!(a.body.contains("not valid"), "{}", a.body);
        assert!(
            !a.body.contains(wrong) && !a.body.contains(ADMIN) && !a.body.contains(READ),
            "{}",
            a.body
        );
        assert!(a.headers.get(header::SET_COOKIE).is_none());
    }
    // A made-up session is no session.
    let a = send(
        &app,
        Method::GET,
        "/ui",
        Some("eventbus_console=00ff"),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let cookie = login(&app, READ).await;
    let a = get(&app, "/ui", &cookie).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("read-only session"));
    assert!(!a.body.contains(READ) && !a.body.contains(ADMIN));
    for h in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
    ] {
        assert!(a.headers.contains_key(h), "{h} missing");
    }
    // Logout ends the session.
    let token = csrf(&a.body);
    let out = post(&app, "/ui/logout", &cookie, &format!("csrf={token}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let a = get(&app, "/ui", &cookie).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn state_changes_need_the_csrf_token_and_the_admin_token() {
    let f = fixture(true).await;
    let app = f.app();
    let id = dead_letter(&f, "wi-1", serde_json::json!({"n": 1}), "boom").await;
    let discard = |csrf: &str| format!("csrf={csrf}&id={id}");

    let admin = login(&app, ADMIN).await;
    let page = get(&app, &format!("/ui/dlq/{id}"), &admin).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let admin_csrf = csrf(&page.body);
    for (form, what) in [
        (format!("id={id}"), "missing"),
        (discard(&"0".repeat(64)), "wrong"),
        (discard(""), "empty"),
    ] {
        for path in ["/ui/dlq/discard", "/ui/dlq/replay"] {
            let a = post(&app, path, &admin, &form).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{what} CSRF on {path}: {}",
                a.body
            );
            assert!(a.body.contains("CSRF"), "{}", a.body);
        }
    }
    // Another session's token is wrong too.
    let read = login(&app, READ).await;
    let read_page = get(&app, &format!("/ui/dlq/{id}"), &read).await;
    let read_csrf = csrf(&read_page.body);
    assert_ne!(read_csrf, admin_csrf);
    let a = post(&app, "/ui/dlq/discard", &admin, &discard(&read_csrf)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // The read session: buttons disabled, its own valid CSRF token refused.
    assert!(read_page.body.contains("disabled"), "{}", read_page.body);
    for path in ["/ui/dlq/discard", "/ui/dlq/replay"] {
        let a = post(&app, path, &read, &discard(&read_csrf)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}: {}", a.body);
        assert!(a.body.contains("may only read"), "{}", a.body);
    }
    // From another site: refused whatever it carries.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/ui/dlq/discard")
        .header(header::HOST, "console.test")
        .header(header::ORIGIN, "https://evil.example")
        .header(header::COOKIE, &admin)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    let res = app
        .clone()
        .oneshot(req.body(Body::from(discard(&admin_csrf))).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Nothing of the above changed it; the admin with its token does.
    let shown = get(&app, &format!("/ui/dlq/{id}"), &admin).await;
    assert!(shown.body.contains("<dd>new</dd>"), "{}", shown.body);
    let done = post(&app, "/ui/dlq/discard", &admin, &discard(&admin_csrf)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(
        done.body
            .contains("Discarded <strong data-k=\"discarded\">1 dead letter</strong>"),
        "{}",
        done.body
    );
    // Bad input is a 400 naming it, never a crash.
    for (path, form) in [
        (
            "/ui/dlq/discard",
            format!("csrf={admin_csrf}&id=not-a-uuid"),
        ),
        ("/ui/dlq/discard", format!("csrf={admin_csrf}")),
        (
            "/ui/dlq/replay",
            format!("csrf={admin_csrf}&id={id}&rate=-3"),
        ),
        (
            "/ui/dlq/replay",
            format!("csrf={admin_csrf}&id={id}&status=bogus"),
        ),
    ] {
        let a = post(&app, path, &admin, &form).await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{path} {form}: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn hostile_event_data_is_escaped_everywhere() {
    let f = fixture(true).await;
    let app = f.app();
    const SCRIPT: &str = "<script>alert('x')</script>";
    const IMG: &str = "\"><img src=x onerror=alert(1)>";
    let key = format!("k{IMG}");
    let data =
        serde_json::json!({"html": SCRIPT, "attr": IMG, "nul": "a\u{0}b", "ctl": "\u{1b}[31m"});
    let mut event = Envelope::new("work_item.hostile", &key, data.clone());
    event.headers.insert("h".into(), SCRIPT.into());
    let published = f.state.publisher.publish(&event).await.unwrap();
    let id = dead_letter(&f, &key, data, &format!("failed: {SCRIPT}")).await;

    let cookie = login(&app, ADMIN).await;
    let pages = [
        format!(
            "/ui/events?topic=work_item&partition={}",
            published.partition
        ),
        format!(
            "/ui/events?topic=work_item&partition={}&tail=1",
            published.partition
        ),
        format!(
            "/ui/events/tail?topic=work_item&partition={}",
            published.partition
        ),
        format!("/ui/events?q={}", event.id),
        format!("/ui/events?q={}", published.entry_id),
        "/ui/dlq".into(),
        format!("/ui/dlq?key={}", super::html::enc(&key)),
        format!("/ui/dlq/{id}"),
        format!("/ui/dlq/preview?do=replay-selected&id={id}"),
        format!("/ui/groups/{}", super::html::enc(IMG)),
        format!("/ui/events?q={}", super::html::enc(SCRIPT)),
        format!("/ui/schemas/{}", super::html::enc(SCRIPT)),
    ];
    for path in pages {
        let a = get(&app, &path, &cookie).await;
        assert!(
            [
                StatusCode::OK,
                StatusCode::NOT_FOUND,
                StatusCode::BAD_REQUEST
            ]
            .contains(&a.status),
            "{path}: {}",
            a.status
        );
        for raw in ["<script>alert", "<img src=x", "\u{0}", "\u{1b}"] {
            assert!(
                !a.body.contains(raw),
                "{path} shows {raw:?} unescaped:\n{}",
                a.body
            );
        }
        if a.status == StatusCode::OK && !path.contains("/groups/") {
            assert!(
                a.body.contains("&lt;script&gt;alert("),
                "{path} does not show the data:\n{}",
                a.body
            );
        }
    }
    // Found by its event id, with the entry id shown.
    let found = send(
        &app,
        Method::GET,
        &format!("/ui/events?q={}", event.id),
        Some(&cookie),
        None,
    )
    .await;
    assert!(found.body.contains(&published.entry_id), "{}", found.body);
    assert!(found.body.contains("1 entry for"), "{}", found.body);
}

#[tokio::test]
async fn without_tokens_a_visit_gets_an_admin_session_with_csrf() {
    let f = fixture(false).await;
    let app = f.app_with(crate::http::HttpOptions::default());
    let a = send(&app, Method::GET, "/ui", None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("admin session"));
    let cookie = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = cookie.split(';').next().unwrap().to_owned();
    // Still no state change without the CSRF token.
    let id = uuid::Uuid::new_v4();
    let a = post(&app, "/ui/dlq/discard", &cookie, &format!("id={id}")).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}
