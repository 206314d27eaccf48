//! The HTML pages of browser sign-in: home-realm discovery, error, signed-out and the
//! built-in `dev` provider's own "pick a demo user" page.
//!
//! Templates live in `templates/*.html`, are embedded with `include_str!` and rendered by
//! one lazily built minijinja [`Environment`] with HTML auto-escaping on for every
//! template. Every page extends `base.html`, which carries all CSS inline: no external
//! asset, no web font, no JavaScript.
//!
//! Two themes, as the two identity worlds differ: employees expect their company's one
//! standard sign-in, customers the look of the brand they are signing in to:
//! - **workforce**: one standardised corporate look. Of the per-route [`Branding`] only the
//!   product name is used (default "Company sign-in"); colours, logo, tagline and copy are
//!   ignored.
//! - **customer**: white-labelled. Brand colours are accepted only as `#rgb`/`#rrggbb`
//!   (anything else falls back to the defaults, so no CSS can be injected), the logo only
//!   as a `data:image/{png,svg+xml,jpeg};base64,...` URI, plus tagline and support text.

use crate::identity::Population;
use base64::Engine as _;
use minijinja::{context, AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use std::sync::LazyLock;

/// Per-route branding overrides (each field optional): the route's validated
/// `branding:` itself; the pages validate colours and logo again before use.
pub use crate::config::BrandingSpec as Branding;

/// The look of a page: the population picks the theme, branding customises it.
#[derive(Debug, Clone)]
pub struct Theme {
    pub population: Population,
    pub branding: Branding,
}

/// One sign-in option offered on the login page.
#[derive(Debug, Clone)]
pub struct ProviderButton {
    pub id: String,
    pub label: String,
    pub population: Population,
    /// Links to the provider's other journeys (create an account, reset a password,
    /// edit a profile), shown under its button.
    pub links: Vec<PageLink>,
}

/// A link under a sign-in option: another journey at that option's provider.
#[derive(Debug, Clone, Serialize)]
pub struct PageLink {
    pub label: &'static str,
    /// A path on this site (`/.idfabric/login?provider=…&journey=…&rd=…`).
    pub href: String,
    /// The journey's name (`signup`, `reset`, `profile`), a hook for styling and tests.
    pub journey: &'static str,
}

/// Everything the home-realm discovery page shows.
pub struct LoginPage<'a> {
    pub theme: &'a Theme,
    /// Where to return after sign-in (already validated by the caller); posted back hidden.
    pub rd: &'a str,
    pub providers: &'a [ProviderButton],
    pub show_email: bool,
    /// Provider id remembered from an earlier sign-in: shown first and marked.
    pub remembered: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Email to pre-fill (e.g. after an unknown domain).
    pub email: Option<&'a str>,
}

/// What the dev provider's page stands in for besides a sign-in.
#[derive(Debug, Default)]
pub struct DevJourney<'a> {
    /// The platform's sign-up page was asked for (`screen_hint=signup`, `prompt=create`,
    /// Cognito's `/signup`).
    pub signup: bool,
    /// An Azure AD B2C policy's page: offers "Forgot your password?" and "Cancel", which
    /// answer as B2C does.
    pub b2c_policy: Option<&'a str>,
}

/// One demo user on the dev provider's page.
pub struct DevUser<'a> {
    pub name: &'a str,
    pub display_name: Option<&'a str>,
    pub email: Option<&'a str>,
    pub mfa: bool,
    pub groups: &'a [String],
}

/// Where the login forms post to.
pub const LOGIN_ACTION: &str = "/.idfabric/login";

/// Largest accepted logo data URI (characters); bigger ones are ignored.
pub const MAX_LOGO_URI_LEN: usize = 256 * 1024;

const WORKFORCE_PRODUCT_NAME: &str = "Company sign-in";
const CUSTOMER_PRODUCT_NAME: &str = "Sign in";
const CUSTOMER_PRIMARY: &str = "#4338ca";
const CUSTOMER_ACCENT: &str = "#0e7490";

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Escape everything, whatever a template is named.
    env.set_auto_escape_callback(|_| AutoEscape::Html);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    for (name, src) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("error.html", include_str!("templates/error.html")),
        ("logged_out.html", include_str!("templates/logged_out.html")),
        ("logout_confirm.html", include_str!("templates/logout_confirm.html")),
        (
            "dev_authorize.html",
            include_str!("templates/dev_authorize.html"),
        ),
    ] {
        env.add_template(name, src)
            .unwrap_or_else(|e| panic!("built-in template {name} does not parse: {e:#}"));
    }
    env
});

/// Validates a CSS colour: only `#rgb` or `#rrggbb` (hex digits) are accepted, lowercased.
pub fn valid_color(s: &str) -> Option<String> {
    let hex = s.strip_prefix('#')?;
    if (hex.len() == 3 || hex.len() == 6) && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(format!("#{}", hex.to_ascii_lowercase()))
    } else {
        None
    }
}

/// Validates a logo: only a base64 `data:` URI of a PNG, SVG or JPEG image, within
/// [`MAX_LOGO_URI_LEN`], whose payload decodes.
pub fn valid_logo(s: &str) -> Option<&str> {
    if s.len() > MAX_LOGO_URI_LEN {
        return None;
    }
    let payload = [
        "data:image/png;base64,",
        "data:image/svg+xml;base64,",
        "data:image/jpeg;base64,",
    ]
    .iter()
    .find_map(|p| s.strip_prefix(p))?;
    if payload.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .ok()?;
    Some(s)
}

/// sRGB relative luminance (WCAG 2) of a colour already passed through [`valid_color`].
fn luminance(color: &str) -> f64 {
    let hex = color.trim_start_matches('#');
    let channel = |i: usize| -> f64 {
        let v = if hex.len() == 3 {
            let d = u8::from_str_radix(&hex[i..i + 1], 16).unwrap_or(0);
            d * 17
        } else {
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0)
        };
        let c = f64::from(v) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(0) + 0.7152 * channel(1) + 0.0722 * channel(2)
}

/// WCAG contrast ratio between two colours.
fn contrast(a: &str, b: &str) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

const DARK_TEXT: &str = "#111827";
const WHITE: &str = "#ffffff";

/// The theme as the templates see it: every value already validated.
#[derive(Debug, Serialize)]
struct ThemeCtx {
    /// `workforce`, `customer` or `dev`.
    kind: &'static str,
    product_name: String,
    /// First letter of the product name (workforce top bar mark).
    initial: String,
    /// Filled buttons.
    primary: String,
    /// Text on `primary`: white or near-black, whichever contrasts more.
    on_primary: &'static str,
    accent: String,
    /// Links and focus rings on white: `primary` when it reaches 4.5:1, else a dark ink.
    ink: String,
    logo: Option<String>,
    tagline: Option<String>,
    support_text: Option<String>,
    footer: Option<String>,
}

fn on_color(bg: &str) -> &'static str {
    if contrast(bg, WHITE) >= contrast(bg, DARK_TEXT) {
        WHITE
    } else {
        DARK_TEXT
    }
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ThemeCtx {
    fn new(theme: &Theme) -> ThemeCtx {
        let mut ctx = ThemeCtx::for_population(theme);
        ctx.initial = initial(&ctx.product_name);
        ctx
    }

    fn for_population(theme: &Theme) -> ThemeCtx {
        let b = &theme.branding;
        match theme.population {
            Population::Workforce => ThemeCtx {
                kind: "workforce",
                initial: String::new(),
                product_name: non_empty(&b.product_name)
                    .unwrap_or_else(|| WORKFORCE_PRODUCT_NAME.to_owned()),
                primary: "#0f3d6e".into(),
                on_primary: WHITE,
                accent: "#0f3d6e".into(),
                ink: "#0f3d6e".into(),
                logo: None,
                tagline: None,
                support_text: None,
                footer: Some("Authorised use only. For help, contact your IT service desk.".into()),
            },
            Population::Customer => {
                let primary = b
                    .primary_color
                    .as_deref()
                    .and_then(valid_color)
                    .unwrap_or_else(|| CUSTOMER_PRIMARY.to_owned());
                let accent = b
                    .accent_color
                    .as_deref()
                    .and_then(valid_color)
                    .unwrap_or_else(|| CUSTOMER_ACCENT.to_owned());
                let ink = if contrast(&primary, WHITE) >= 4.5 {
                    primary.clone()
                } else if contrast(&accent, WHITE) >= 4.5 {
                    accent.clone()
                } else {
                    DARK_TEXT.to_owned()
                };
                ThemeCtx {
                    kind: "customer",
                    initial: String::new(),
                    product_name: non_empty(&b.product_name)
                        .unwrap_or_else(|| CUSTOMER_PRODUCT_NAME.to_owned()),
                    on_primary: on_color(&primary),
                    primary,
                    accent,
                    ink,
                    logo: b
                        .logo_data_uri
                        .as_deref()
                        .and_then(valid_logo)
                        .map(str::to_owned),
                    tagline: non_empty(&b.tagline),
                    support_text: non_empty(&b.support_text),
                    footer: None,
                }
            }
        }
    }

    fn dev() -> ThemeCtx {
        ThemeCtx {
            kind: "dev",
            initial: "D".into(),
            product_name: "idfabric dev provider".into(),
            primary: "#1f2937".into(),
            on_primary: WHITE,
            accent: "#b45309".into(),
            ink: "#1f2937".into(),
            logo: None,
            tagline: None,
            support_text: None,
            footer: Some(
                "Built-in development identity provider. Never enable it in production.".into(),
            ),
        }
    }
}

#[derive(Serialize)]
struct ButtonCtx<'a> {
    id: &'a str,
    label: &'a str,
    initial: String,
    population: &'static str,
    remembered: bool,
    /// Shown under the label when the option belongs to the other population.
    hint: Option<&'static str>,
    links: &'a [PageLink],
}

#[derive(Serialize)]
struct DevUserCtx<'a> {
    name: &'a str,
    display_name: Option<&'a str>,
    email: Option<&'a str>,
    mfa: bool,
    groups: &'a [String],
    initial: String,
}

fn initial(s: &str) -> String {
    s.chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "•".into())
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    match ENV.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(template = name, error = %format!("{e:#}"), "page template failed to render");
            FALLBACK_PAGE.to_owned()
        }
    }
}

const FALLBACK_PAGE: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Error</title></head>\
<body><main><h1>Something went wrong</h1><p>This page could not be shown. Please try again later.</p></main></body></html>";

/// The home-realm discovery page at `/.idfabric/login`.
///
/// Two forms, both `POST` to `/.idfabric/login` with a hidden `rd`: the email form (field
/// `email`, only when `show_email`) and the provider form (one submit button per provider,
/// `name="provider" value="{id}"`). The remembered provider comes first, filled and marked
/// "Last used"; `error` is shown in a `role="alert"` region.
pub fn login_page(p: &LoginPage) -> String {
    let theme = ThemeCtx::new(p.theme);
    let remembered = p
        .remembered
        .filter(|r| p.providers.iter().any(|b| b.id == *r));
    let mut buttons: Vec<ButtonCtx> = p
        .providers
        .iter()
        .map(|b| ButtonCtx {
            id: &b.id,
            label: &b.label,
            initial: initial(&b.label),
            population: b.population.as_str(),
            remembered: remembered == Some(b.id.as_str()),
            hint: (b.population != p.theme.population).then_some(match b.population {
                Population::Workforce => "Work account",
                Population::Customer => "Personal account",
            }),
            links: &b.links,
        })
        .collect();
    // Stable: the remembered one first, the rest in configured order.
    buttons.sort_by_key(|b| !b.remembered);
    render(
        "login.html",
        context! {
            theme,
            // A constant: emitted verbatim, so the markup reads `action="/.idfabric/login"`.
            action => minijinja::Value::from_safe_string(LOGIN_ACTION.to_owned()),
            rd => p.rd,
            providers => buttons,
            show_email => p.show_email,
            error => p.error,
            email => p.email,
        },
    )
}

/// A themed error page: `status` and `title` as heading, `detail` as explanation, and a
/// "Try again" link when `retry_url` is given.
pub fn error_page(
    theme: &Theme,
    status: u16,
    title: &str,
    detail: &str,
    retry_url: Option<&str>,
) -> String {
    render(
        "error.html",
        context! {
            theme => ThemeCtx::new(theme),
            status,
            title,
            detail,
            retry_url,
        },
    )
}

/// The page after `/.idfabric/logout`, with a "Sign in again" link.
pub fn logged_out_page(theme: &Theme, sign_in_again: &str) -> String {
    render(
        "logged_out.html",
        context! {
            theme => ThemeCtx::new(theme),
            sign_in_again,
        },
    )
}

/// "Sign out?" with one button that POSTs `params` back to `action`: an RP-initiated
/// logout that cannot prove it comes from the signed-in user's app (no `id_token_hint`
/// for this user) is confirmed first, so a cross-site link cannot end a session.
pub fn logout_confirm_page(theme: &Theme, action: &str, params: &[(&str, &str)]) -> String {
    render(
        "logout_confirm.html",
        context! {
            theme => ThemeCtx::new(theme),
            action,
            params,
            own => false,
        },
    )
}

/// The gateway's own "Sign out?" page (`GET /.idfabric/logout`): one button that POSTs
/// to `action`.
pub fn sign_out_page(theme: &Theme, action: &str) -> String {
    let params: &[(&str, &str)] = &[];
    render(
        "logout_confirm.html",
        context! {
            theme => ThemeCtx::new(theme),
            action,
            params,
            own => true,
        },
    )
}

/// The built-in dev provider's own sign-in page: one button per user (a form POST to
/// `action` with hidden fields `params` and a submit button name="user" value=name); when
/// `step_up` is true it says that a second factor is being verified.
pub fn dev_authorize_page(
    provider_id: &str,
    action: &str,
    users: &[DevUser],
    params: &[(String, String)],
    step_up: bool,
    journey: &DevJourney<'_>,
) -> String {
    let users: Vec<DevUserCtx> = users
        .iter()
        .map(|u| DevUserCtx {
            name: u.name,
            display_name: u.display_name.filter(|d| !d.trim().is_empty()),
            email: u.email,
            mfa: u.mfa,
            groups: u.groups,
            initial: initial(u.display_name.unwrap_or(u.name)),
        })
        .collect();
    render(
        "dev_authorize.html",
        context! {
            theme => ThemeCtx::dev(),
            provider_id,
            action,
            users,
            params,
            signup => journey.signup,
            b2c_policy => journey.b2c_policy,
            step_up,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const XSS: &str = "<script>alert(1)</script>";
    const PNG: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

    fn theme(population: Population, branding: Branding) -> Theme {
        Theme {
            population,
            branding,
        }
    }

    fn brand() -> Branding {
        Branding {
            product_name: Some("Acme Shop".into()),
            primary_color: Some("#E4572E".into()),
            accent_color: Some("#29335c".into()),
            logo_data_uri: Some(PNG.into()),
            tagline: Some("Groceries in minutes".into()),
            support_text: Some("Need help? support@acme.example".into()),
        }
    }

    fn buttons() -> Vec<ProviderButton> {
        vec![
            ProviderButton {
                id: "google".into(),
                label: "Google".into(),
                population: Population::Customer,
                links: vec![],
            },
            ProviderButton {
                id: "auth0".into(),
                label: "Acme account".into(),
                population: Population::Customer,
                links: vec![PageLink {
                    label: "Create an account",
                    href: "/.idfabric/login?provider=auth0&journey=signup&rd=%2Fshop".into(),
                    journey: "signup",
                }],
            },
            ProviderButton {
                id: "entra".into(),
                label: "Acme staff".into(),
                population: Population::Workforce,
                links: vec![],
            },
        ]
    }

    fn login(
        t: &Theme,
        providers: &[ProviderButton],
        remembered: Option<&str>,
        error: Option<&str>,
        email: Option<&str>,
    ) -> String {
        login_page(&LoginPage {
            theme: t,
            rd: "/orders?x=1&y=2",
            providers,
            show_email: true,
            remembered,
            error,
            email,
        })
    }

    fn assert_no_raw_script(html: &str) {
        assert!(
            !html.to_ascii_lowercase().contains("<script"),
            "raw <script> in:\n{html}"
        );
        assert!(
            html.contains("&lt;script&gt;"),
            "escaped script missing in:\n{html}"
        );
    }

    #[test]
    fn escapes_everything() {
        let mut b = brand();
        b.product_name = Some(XSS.into());
        b.tagline = Some(XSS.into());
        b.support_text = Some(XSS.into());
        for pop in Population::ALL {
            let t = theme(pop, b.clone());
            let providers = vec![ProviderButton {
                id: "\"><script>x</script>".into(),
                label: XSS.into(),
                population: pop,
                links: vec![PageLink { label: "Create an account", href: format!("/.idfabric/login?rd={XSS}"), journey: "signup" }],
            }];
            let html = login_page(&LoginPage {
                theme: &t,
                rd: "/\"><script>alert(1)</script>",
                providers: &providers,
                show_email: true,
                remembered: None,
                error: Some(XSS),
                email: Some("\"><script>alert(1)</script>@x.example"),
            });
            assert_no_raw_script(&html);
            assert!(
                html.contains("value=\"&#x2f;&quot;&gt;&lt;script&gt;"),
                "rd not escaped in:\n{html}"
            );
            assert_no_raw_script(&error_page(&t, 400, XSS, XSS, Some("/\"><script>")));
            assert_no_raw_script(&logged_out_page(&t, "/\"><script>alert(1)</script>"));
        }
        let groups = vec![XSS.to_string()];
        let users = [DevUser {
            name: XSS,
            display_name: Some(XSS),
            email: Some(XSS),
            mfa: true,
            groups: &groups,
        }];
        let params = vec![
            (XSS.to_string(), XSS.to_string()),
            ("state".into(), "\"><script>".into()),
        ];
        let html = dev_authorize_page(XSS, "/authorize\"><script>", &users, &params, true, &DevJourney { signup: true, b2c_policy: Some(XSS) });
        assert_no_raw_script(&html);
        assert!(html.contains("value=\"&quot;&gt;&lt;script&gt;\""));
    }

    #[test]
    fn colour_validation() {
        assert_eq!(valid_color("#abc").as_deref(), Some("#abc"));
        assert_eq!(valid_color("#A1B2C3").as_deref(), Some("#a1b2c3"));
        for bad in [
            "",
            "#",
            "red",
            "abc",
            "#abcd",
            "#12345g",
            " #fff",
            "#fff ",
            "#fff;}body{display:none",
            "#ffffff;",
            "rgb(0,0,0)",
            "#aabbccdd",
            "#ｆｆｆ",
            "var(--x)",
            "url(x)",
        ] {
            assert_eq!(valid_color(bad), None, "{bad:?} must be rejected");
        }
        // A bad colour on a customer page falls back to the defaults, never reaches the CSS.
        let mut b = brand();
        b.primary_color = Some("red;}body{background:url(https://evil.example/x)".into());
        b.accent_color = Some("#12".into());
        let html = login(
            &theme(Population::Customer, b),
            &buttons(),
            None,
            None,
            None,
        );
        assert!(!html.contains("evil.example"));
        assert!(html.contains(&format!("--primary:{CUSTOMER_PRIMARY};")));
        assert!(html.contains(&format!("--accent:{CUSTOMER_ACCENT};")));
    }

    #[test]
    fn contrast_picks_readable_text() {
        assert_eq!(on_color("#ffff00"), DARK_TEXT);
        assert_eq!(on_color("#1d4ed8"), WHITE);
        assert!((contrast("#000", "#fff") - 21.0).abs() < 0.01);
        // A very light brand colour is not used as link/focus ink on white.
        let mut b = brand();
        b.primary_color = Some("#fde047".into());
        b.accent_color = Some("#a5f3fc".into());
        let ctx = ThemeCtx::new(&theme(Population::Customer, b));
        assert_eq!(ctx.ink, DARK_TEXT);
        assert_eq!(ctx.on_primary, DARK_TEXT);
    }

    #[test]
    fn logo_validation() {
        assert!(valid_logo(PNG).is_some());
        assert!(valid_logo(
            "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4="
        )
        .is_some());
        assert!(valid_logo("data:image/jpeg;base64,/9j/4AAQSkZJRg==").is_some());
        for bad in [
            "",
            "https://cdn.example/logo.png",
            "javascript:alert(1)",
            "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
            "data:text/html;base64,PHNjcmlwdD4=",
            "data:image/svg+xml,<svg onload=alert(1)>",
            "data:image/png;base64,",
            "data:image/png;base64,abc\" onerror=\"alert(1)",
            "DATA:image/png;base64,iVBORw0KGgo=",
            " data:image/png;base64,iVBORw0KGgo=",
        ] {
            assert_eq!(valid_logo(bad), None, "{bad:?} must be rejected");
        }
        let huge = format!("data:image/png;base64,{}", "A".repeat(MAX_LOGO_URI_LEN));
        assert_eq!(valid_logo(&huge), None);

        let mut b = brand();
        b.logo_data_uri = Some("https://evil.example/logo.png".into());
        let html = login(
            &theme(Population::Customer, b),
            &buttons(),
            None,
            None,
            None,
        );
        assert!(!html.contains("evil.example"));
        assert!(!html.contains("<img"));
        let html = login(
            &theme(Population::Customer, brand()),
            &buttons(),
            None,
            None,
            None,
        );
        assert!(html.contains("<img class=\"logo\""));
        assert!(html.contains("alt=\"Acme Shop\""));
    }

    #[test]
    fn workforce_is_standard_customer_is_branded() {
        let wf = login(
            &theme(Population::Workforce, brand()),
            &buttons(),
            None,
            None,
            None,
        );
        let cu = login(
            &theme(Population::Customer, brand()),
            &buttons(),
            None,
            None,
            None,
        );

        assert!(wf.contains("class=\"theme-workforce\""));
        assert!(cu.contains("class=\"theme-customer\""));
        // Workforce: product name yes, everything else of the brand no.
        assert!(wf.contains("Acme Shop"));
        for brand_only in [
            "#e4572e",
            "#29335c",
            "<img",
            "Groceries in minutes",
            "support@acme.example",
        ] {
            assert!(
                !wf.contains(brand_only),
                "workforce page shows {brand_only}"
            );
            assert!(cu.contains(brand_only), "customer page lacks {brand_only}");
        }
        assert!(wf.contains("Work email"));
        assert!(cu.contains("Email address"));

        let wf_default = login(
            &theme(Population::Workforce, Branding::default()),
            &buttons(),
            None,
            None,
            None,
        );
        assert!(wf_default.contains("Company sign-in"));
        // Workforce pages look the same whatever a route's branding says, product name aside.
        let mut other = brand();
        other.product_name = None;
        let wf_other = login(
            &theme(Population::Workforce, other),
            &buttons(),
            None,
            None,
            None,
        );
        assert_eq!(wf_default, wf_other);
        let cu_default = login(
            &theme(Population::Customer, Branding::default()),
            &buttons(),
            None,
            None,
            None,
        );
        assert!(cu_default.contains(CUSTOMER_PRIMARY));
        assert_ne!(cu_default, cu);
    }

    #[test]
    fn login_page_structure() {
        let t = theme(Population::Customer, brand());
        let providers = buttons();
        let html = login(
            &t,
            &providers,
            Some("entra"),
            Some("We don't know that email domain."),
            Some("ann@unknown.example"),
        );
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<html lang=\"en\">"));
        assert!(html.contains("name=\"viewport\""));
        assert!(html.contains("@media (max-width:"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external assets"
        );
        assert_eq!(html.matches("action=\"/.idfabric/login\"").count(), 2);
        assert_eq!(html.matches("method=\"post\"").count(), 2);
        assert_eq!(
            html.matches("name=\"rd\" value=\"&#x2f;orders?x=1&amp;y=2\"")
                .count(),
            2
        );
        assert!(html.contains("<label for=\"email\""));
        assert!(html.contains("name=\"email\""));
        assert!(html.contains("value=\"ann@unknown.example\""));
        assert!(html.contains("role=\"alert\""));
        assert!(html.contains("We don&#x27;t know that email domain."));
        for p in &providers {
            assert!(html.contains(&format!("name=\"provider\" value=\"{}\"", p.id)));
            assert!(html.contains(&format!("Continue with {}", p.label)));
        }
        // Remembered first and marked.
        let entra = html.find("value=\"entra\"").unwrap();
        let google = html.find("value=\"google\"").unwrap();
        assert!(entra < google);
        assert_eq!(html.matches("Last used").count(), 1);
        assert!(html.contains("Work account"));
        // Unknown remembered id: no mark, configured order.
        let html = login(&t, &providers, Some("gone"), None, None);
        assert!(!html.contains("Last used"));
        assert!(html.find("value=\"google\"").unwrap() < html.find("value=\"entra\"").unwrap());
        assert!(!html.contains("role=\"alert\""));

        let html = login_page(&LoginPage {
            theme: &t,
            rd: "/",
            providers: &providers,
            show_email: false,
            remembered: None,
            error: None,
            email: None,
        });
        assert!(!html.contains("name=\"email\""));
        assert_eq!(html.matches("action=\"/.idfabric/login\"").count(), 1);
        let html = login_page(&LoginPage {
            theme: &t,
            rd: "/",
            providers: &[],
            show_email: true,
            remembered: None,
            error: None,
            email: None,
        });
        assert!(html.contains("name=\"email\""));
        assert!(!html.contains("name=\"provider\""));
        let html = login_page(&LoginPage {
            theme: &t,
            rd: "/",
            providers: &[],
            show_email: false,
            remembered: None,
            error: None,
            email: None,
        });
        assert!(html.contains("No sign-in method"));
    }

    #[test]
    fn error_and_logged_out_pages() {
        for pop in Population::ALL {
            let t = theme(pop, brand());
            let html = error_page(
                &t,
                403,
                "Multi-factor authentication required",
                "This page needs MFA.",
                Some("/.idfabric/login?rd=%2Fadmin"),
            );
            assert!(html.contains("Error 403"));
            assert!(html.contains("Multi-factor authentication required"));
            assert!(html.contains("This page needs MFA."));
            assert!(html.contains("href=\"&#x2f;.idfabric&#x2f;login?rd=%2Fadmin\""));
            assert!(html.contains("Try again"));
            let html = error_page(&t, 503, "Sign-in unavailable", "Try later.", None);
            assert!(!html.contains("Try again"));
            let html = logged_out_page(&t, "/.idfabric/login");
            assert!(html.contains("signed out"));
            assert!(html.contains("Sign in again"));
            assert!(html.contains("href=\"&#x2f;.idfabric&#x2f;login\""));
        }
    }

    #[test]
    fn dev_page_lists_every_user_and_param() {
        let g1 = vec!["admins".to_string(), "eng".to_string()];
        let g2: Vec<String> = vec![];
        let users = [
            DevUser {
                name: "alice",
                display_name: Some("Alice Admin"),
                email: Some("alice@dev.example"),
                mfa: true,
                groups: &g1,
            },
            DevUser {
                name: "bob",
                display_name: None,
                email: None,
                mfa: false,
                groups: &g2,
            },
        ];
        let params = vec![
            ("client_id".to_string(), "idfabric".to_string()),
            ("state".to_string(), "st-123".to_string()),
            ("nonce".to_string(), "n-456".to_string()),
            (
                "redirect_uri".to_string(),
                "https://app.example/.idfabric/callback".to_string(),
            ),
        ];
        let html = dev_authorize_page("dev", "/dev/authorize", &users, &params, false, &DevJourney::default());
        assert!(html.contains("DEVELOPMENT"));
        assert!(html.contains("class=\"theme-dev\""));
        assert!(html.contains("action=\"&#x2f;dev&#x2f;authorize\""));
        for u in ["alice", "bob"] {
            assert!(
                html.contains(&format!("name=\"user\" value=\"{u}\"")),
                "{u} missing"
            );
        }
        assert!(
            html.contains("Alice Admin")
                && html.contains("alice@dev.example")
                && html.contains("admins")
        );
        for (k, v) in [
            ("client_id", "idfabric"),
            ("state", "st-123"),
            ("nonce", "n-456"),
        ] {
            assert!(
                html.contains(&format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"
                )),
                "{k} missing"
            );
        }
        assert!(html.contains("name=\"redirect_uri\" value=\"https:&#x2f;&#x2f;app.example&#x2f;.idfabric&#x2f;callback\""));
        assert!(!html.contains("second factor"));
        let html = dev_authorize_page("dev", "/dev/authorize", &users, &params, true, &DevJourney::default());
        assert!(html.contains("second factor"));
    }

    /// Writes every page of both themes to `$IDFABRIC_PAGES_DIR` (default `/tmp/idfabric-pages`)
    /// for a look in a browser: `cargo test --lib login::pages::tests::dump_pages -- --ignored`.
    #[test]
    #[ignore]
    fn dump_pages() {
        let dir =
            std::env::var("IDFABRIC_PAGES_DIR").unwrap_or_else(|_| "/tmp/idfabric-pages".into());
        std::fs::create_dir_all(&dir).unwrap();
        let logo = "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciIHZpZXdCb3g9IjAgMCAyMDAgNDgiIHdpZHRoPSIyMDAiIGhlaWdodD0iNDgiPjxjaXJjbGUgY3g9IjI0IiBjeT0iMjQiIHI9IjIwIiBmaWxsPSIjZTQ1NzJlIi8+PHRleHQgeD0iNTIiIHk9IjMyIiBmb250LWZhbWlseT0iQXJpYWwsIHNhbnMtc2VyaWYiIGZvbnQtc2l6ZT0iMjQiIGZvbnQtd2VpZ2h0PSJib2xkIiBmaWxsPSIjMjkzMzVjIj5BY21lIFNob3A8L3RleHQ+PC9zdmc+";
        let mut b = brand();
        b.logo_data_uri = Some(logo.into());
        let providers = buttons();
        let write =
            |name: &str, html: String| std::fs::write(format!("{dir}/{name}.html"), html).unwrap();
        for (pop, branding) in [
            (Population::Workforce, Branding::default()),
            (Population::Customer, b),
        ] {
            let t = theme(pop, branding);
            let p = pop.as_str();
            let ps: Vec<ProviderButton> = providers
                .iter()
                .filter(|b| pop == Population::Customer || b.population == pop)
                .cloned()
                .collect();
            write(
                &format!("{p}-login"),
                login(&t, &ps, Some(&ps[ps.len() - 1].id), None, None),
            );
            write(
                &format!("{p}-login-error"),
                login(
                    &t,
                    &ps,
                    None,
                    Some("We could not find a sign-in method for that email domain."),
                    Some("ann@unknown.example"),
                ),
            );
            write(&format!("{p}-error"), error_page(&t, 403, "Multi-factor authentication required", "This page requires multi-factor authentication, and your sign-in did not include it.", Some("/.idfabric/login")));
            write(
                &format!("{p}-logged-out"),
                logged_out_page(&t, "/.idfabric/login"),
            );
        }
        let g1 = vec!["admins".to_string(), "engineering".to_string()];
        let g2 = vec!["customers".to_string()];
        let users = [
            DevUser {
                name: "alice",
                display_name: Some("Alice Admin"),
                email: Some("alice@corp.example"),
                mfa: true,
                groups: &g1,
            },
            DevUser {
                name: "bob",
                display_name: Some("Bob Buyer"),
                email: Some("bob@shop.example"),
                mfa: false,
                groups: &g2,
            },
            DevUser {
                name: "carol",
                display_name: None,
                email: None,
                mfa: false,
                groups: &[],
            },
        ];
        let params = vec![("state".to_string(), "abc".to_string())];
        write(
            "dev-authorize",
            dev_authorize_page("dev", "/dev/authorize", &users, &params, false, &DevJourney::default()),
        );
        write(
            "dev-authorize-stepup",
            dev_authorize_page("dev", "/dev/authorize", &users, &params, true, &DevJourney::default()),
        );
    }
}
