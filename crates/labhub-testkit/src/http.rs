//! The HTTP clients tests talk to the hub with, and reading a page's CSRF field.

use reqwest::{Client, redirect};

/// A browser-like client: keeps cookies, does not follow redirects (tests assert them).
pub fn browser() -> Client {
    Client::builder().cookie_store(true).redirect(redirect::Policy::none()).build().expect("an HTTP client")
}

/// A script-like client: no cookies, no redirects, no proxy from the environment.
pub fn script() -> Client {
    Client::builder().no_proxy().redirect(redirect::Policy::none()).build().expect("an HTTP client")
}

/// The value of the first `_csrf` field in a page.
pub fn csrf_of(html: &str) -> String {
    let marker = "name=\"_csrf\" value=\"";
    let start = html.find(marker).map(|i| i + marker.len()).expect("a CSRF field on the page");
    let end = html[start..].find('"').expect("a closing quote") + start;
    html[start..end].to_string()
}
