//! The admin page of datasets: what is registered (with a warning when a source is gone), a
//! form to add one (kept as typed when refused), and removing one.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use labhub_core::{DatasetName, GroupName};
use labhub_service::datasets::{DatasetSource, DatasetStatus, NewDatasetRequest};
use labhub_service::{Actor, Principal, ServiceError};
use serde::Deserialize;

use crate::extract::{AdminUser, CsrfForm};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, When, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};

struct DatasetRow {
    name: String,
    description: String,
    source: String,
    problem: Option<String>,
    granted: String,
    added: When,
}

/// The add form, as typed.
#[derive(Deserialize, Default)]
pub struct AddForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    groups: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_datasets.html")]
struct DatasetsPage {
    c: Chrome,
    admin_tab: &'static str,
    datasets: Vec<DatasetRow>,
    form: AddForm,
}

async fn view(state: &AppState, me: &Principal, page: &Page, form: AddForm) -> Result<DatasetsPage, AppError> {
    let hub = state.hub();
    let now = hub.now();
    let rows = hub.datasets().list(Actor::User(me)).await?.into_iter().map(|s: DatasetStatus| {
        let d = s.dataset;
        DatasetRow {
            name: d.name.to_string(),
            description: d.description,
            source: d.source.to_string(),
            problem: s.problem,
            granted: if d.groups.is_empty() {
                "everyone".into()
            } else {
                d.groups.iter().map(GroupName::as_str).collect::<Vec<_>>().join(", ")
            },
            added: When::new(now, d.created_at),
        }
    });
    Ok(DatasetsPage { c: page.chrome("admin"), admin_tab: "datasets", datasets: rows.collect(), form })
}

/// `GET /hub/admin/datasets` (admins).
pub async fn list(State(state): State<AppState>, AdminUser(me): AdminUser, page: Page) -> Result<Response, AppError> {
    let v = view(&state, &me, &page, AddForm::default()).await?;
    Ok(page.render(v))
}

/// Reads the add form into a request, or says what is wrong with it.
fn request_of(form: &AddForm) -> Result<NewDatasetRequest, ServiceError> {
    let name = DatasetName::parse(form.name.trim())?;
    let source = form.source.trim().to_string();
    let source = match form.kind.as_str() {
        "volume" => DatasetSource::Volume(source),
        "" | "path" => DatasetSource::HostPath(source),
        other => return Err(ServiceError::Invalid(format!("{other:?} is not a kind of source"))),
    };
    let groups = form
        .groups
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|g| !g.is_empty())
        .map(GroupName::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NewDatasetRequest { name, source, description: form.description.trim().to_string(), groups })
}

/// `POST /hub/admin/datasets` (admins): registers a dataset; a refusal shows the form again
/// as typed, with the reason.
pub async fn add(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    CsrfForm(form): CsrfForm<AddForm>,
) -> Result<Response, AppError> {
    let result = match request_of(&form) {
        Ok(request) => state.hub().datasets().add(Actor::User(&me), request).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(d) => Ok(redirect_with_flash(
            &state,
            "/hub/admin/datasets",
            &format!("Added {}: servers read it at ~/datasets/{} from their next start.", d.name, d.name),
        )),
        Err(e @ (ServiceError::Invalid(_) | ServiceError::Conflict(_) | ServiceError::NotFound(_))) => {
            let mut v = view(&state, &me, &page, form).await?;
            (v.c.flash, v.c.flash_error) = (Some(e.to_string()), true);
            Ok(page.render_status(StatusCode::BAD_REQUEST, v))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /hub/admin/datasets/{name}/remove` (admins).
pub async fn remove(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    let name = DatasetName::parse(&name).map_err(|e| AppError::NotFound(e.to_string()))?;
    match state.hub().datasets().remove(Actor::User(&me), &name).await {
        Ok(()) => Ok(redirect_with_flash(
            &state,
            "/hub/admin/datasets",
            &format!("Removed {name}: servers no longer mount it from their next start; its files are untouched."),
        )),
        Err(e @ ServiceError::NotFound(_)) => Ok(redirect_with_error(&state, "/hub/admin/datasets", &e.to_string())),
        Err(e) => Err(e.into()),
    }
}
