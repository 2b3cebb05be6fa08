//! The page shells, compiled in (maud). A page carries the server's time of answering
//! (`<meta name="wenhui-now">`, milliseconds since the epoch), from which its script counts
//! down to an opening without the phone's clock; the content comes from the JSON API.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::http::AppState;

/// `GET /`: the citizen's page (mobile first): open and upcoming batches.
pub async fn citizen(State(state): State<AppState>) -> Response {
    let body = html! {
        header.bar {
            h1 { "文惠" small { "文化消费券" } }
        }
        main #batches aria-live="polite" aria-busy="true" {
            p.note { "正在加载本期消费券…" }
        }
        footer { "开抢时间以服务器的北京时间为准" }
    };
    page(&state, "文惠 · 文化消费券", "citizen", &["citizen.js"], body)
}

/// `GET /console/`: the finance console's sign-in (a staff key, kept in the tab's session
/// storage only).
pub async fn console(State(state): State<AppState>) -> Response {
    let body = html! {
        header.bar {
            h1 { "文惠" small { "财务与管理" } }
            button #sign-out type="button" hidden { "退出" }
        }
        main {
            form #sign-in.card {
                h2 { "工作人员登录" }
                label for="staff-key" { "工作人员密钥" }
                input #staff-key name="key" type="password" autocomplete="off" required
                    spellcheck="false" placeholder="粘贴发给你的密钥";
                p #sign-in-error.error role="alert" hidden {}
                button type="submit" { "登录" }
                p.note { "密钥只保存在本标签页中，关闭标签页即退出。" }
            }
            section #who.card hidden aria-live="polite" {}
        }
    };
    page(&state, "文惠 · 财务与管理", "console", &["console.js"], body)
}

/// The frame every page shares: the head, the server time, our stylesheet and scripts.
fn page(state: &AppState, title: &str, class: &str, scripts: &[&str], body: Markup) -> Response {
    let now_ms = state.clock().now().unix_us().div_euclid(1_000);
    let markup = html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="wenhui-now" content=(now_ms);
                title { (title) }
                link rel="icon" type="image/svg+xml" href="/assets/icon.svg";
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/wenhui.js" defer {}
                @for script in scripts {
                    script src={ "/assets/" (script) } defer {}
                }
            }
            body class=(class) { (body) }
        }
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        // The page holds the time it was answered: never from a cache.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    (headers, markup.into_string()).into_response()
}
