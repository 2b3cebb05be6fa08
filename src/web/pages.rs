//! The page shells, compiled in (maud). A page carries the server's time of answering
//! (`<meta name="wenhui-now">`, milliseconds since the epoch), from which its script counts
//! down to an opening without the phone's clock; the content comes from the JSON API.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use crate::http::AppState;

/// `GET /`: the citizen's page (mobile first): open and upcoming batches with their claim
/// buttons (or, for a lottery, its entry and result), sign-up and sign-in with a one-time code,
/// the citizen's vouchers, the benefit card (taking it, points, exchanges), and a voucher's or
/// the card's QR code full screen. The script (`citizen.js`) shows one view at a time.
pub async fn citizen(State(state): State<AppState>) -> Response {
    let body = html! {
        header.bar {
            h1 { "文惠" small { "文化消费券" } }
            nav.tabs {
                button #to-batches type="button" { "领券" }
                button #to-mine type="button" { "我的券" }
                button #to-card type="button" { "文惠卡" }
                button #to-account type="button" { "登录" }
            }
        }
        main #batches aria-live="polite" aria-busy="true" {
            p.note { "正在加载本期消费券…" }
        }
        main #account hidden { (account_form()) }
        main #mine hidden aria-live="polite" {}
        main #card hidden aria-live="polite" {}
        section #qr.qr hidden role="dialog" aria-modal="true" aria-labelledby="qr-title" {
            h2 #qr-title {}
            p #qr-name.note {}
            div.qr-frame { img #qr-image alt="消费券二维码"; }
            p.qr-show { "请向收银员出示" }
            p #qr-state.note aria-live="polite" {}
            button #qr-close type="button" { "关闭" }
        }
        footer { "开抢时间以服务器的北京时间为准" }
    };
    page(&state, "文惠 · 文化消费券", "citizen", &["citizen.js"], body)
}

/// Sign-up and sign-in in one form: the script shows the name field for a sign-up only.
fn account_form() -> Markup {
    html! {
        form #auth.card data-mode="sign_in" {
            h2 #auth-title { "登录" }
            label for="phone" { "手机号" }
            input #phone name="phone" type="tel" inputmode="numeric" autocomplete="tel" required
                maxlength="16" placeholder="11位手机号";
            div.code-row {
                input #code name="code" inputmode="numeric" autocomplete="one-time-code" maxlength="6"
                    required placeholder="6位验证码" aria-label="验证码";
                button #send-code type="button" { "获取验证码" }
            }
            p #code-sent.note aria-live="polite" {}
            label.register for="name" { "姓名" }
            input #name.register name="name" autocomplete="name" maxlength="50" placeholder="与身份证一致";
            label for="id-number" { "身份证号" }
            input #id-number name="id_number" autocomplete="off" maxlength="18" spellcheck="false"
                placeholder="18位身份证号";
            p #auth-error.error role="alert" hidden {}
            button #auth-submit type="submit" { "登录" }
            button #switch-mode.link type="button" { "还没有账号？注册" }
        }
        section #signed-in.card hidden {
            p #who.who {}
            button #sign-out type="button" { "退出登录" }
            p.note { "登录信息保存在本机浏览器中，退出登录即清除。" }
        }
    }
}

/// `GET /console/`: the finance console. A shell (`console.js`): the sign-in with a staff key
/// (kept in the tab's session storage only), the season picker, and a nav of the sections the
/// key may use; each section is drawn by its own script (`console-money.js`: the dashboard,
/// reconciliation, settlements and closing).
pub async fn console(State(state): State<AppState>) -> Response {
    let body = html! {
        header.bar {
            h1 { "文惠" small { "财务与管理" } }
            div #season-picker.picker hidden {
                label for="season" { "活动季" }
                select #season {}
            }
            div #who.signed-in hidden aria-live="polite" {}
        }
        nav #sections.sections hidden aria-label="功能" {}
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
            section #view hidden aria-live="polite" {}
        }
    };
    page(&state, "文惠 · 财务与管理", "console", CONSOLE_SCRIPTS, body)
}

/// The console's scripts, in order: the shell first, then each section's file (they register
/// with the shell as they run).
const CONSOLE_SCRIPTS: &[&str] = &["console.js", "console-money.js", "console-admin.js"];

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
