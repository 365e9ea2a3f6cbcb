//! The admin's image catalogue pages.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};
use axum::response::Response;
use labhub_core::resources::{format_bytes, format_cpu};
use labhub_service::catalogue::short_id;
use labhub_service::model::CatalogueImage;
use labhub_service::{Actor, ServiceError};
use serde::Deserialize;

use crate::extract::{AdminUser, CsrfForm};
use crate::images_input::{Command, ImageInput};
use crate::pages::login::Empty;
use crate::views::{Chrome, Page, redirect_with_error, redirect_with_flash};
use crate::{AppError, AppState};
use labhub_core::resources::Amount;

/// The add/edit form's values.
pub struct ImageFormView {
    new: bool,
    action: String,
    name: String,
    display_name: String,
    description: String,
    reference: String,
    kind: String,
    cpu: String,
    memory: String,
    port: String,
    command: String,
    recipe: String,
    recipes: Vec<String>,
    enabled: bool,
    contract: String,
    placement: String,
}

impl ImageFormView {
    fn blank(recipes: Vec<String>) -> Self {
        Self {
            new: true,
            action: "/hub/admin/images".into(),
            name: String::new(),
            display_name: String::new(),
            description: String::new(),
            reference: String::new(),
            kind: "jupyter".into(),
            cpu: "1".into(),
            memory: "2G".into(),
            port: String::new(),
            command: String::new(),
            recipe: String::new(),
            recipes,
            enabled: true,
            contract: "labhub".into(),
            placement: String::new(),
        }
    }

    fn of(image: &CatalogueImage, recipes: Vec<String>) -> Self {
        let i = &image.fields;
        Self {
            new: false,
            action: format!("/hub/admin/images/{}", image.name),
            name: image.name.clone(),
            display_name: i.display_name.clone(),
            description: i.description.clone(),
            reference: i.reference.to_string(),
            kind: i.kind.as_str().into(),
            cpu: format_cpu(i.cpu_millis),
            memory: format_bytes(i.memory_bytes).replace(' ', "").replace("iB", ""),
            port: i.port.map(|p| p.to_string()).unwrap_or_default(),
            command: i.command.clone().map(|c| c.join(" ")).unwrap_or_default(),
            recipe: i.recipe.clone().unwrap_or_default(),
            recipes,
            enabled: i.enabled,
            contract: i.contract.as_str().into(),
            placement: i.placement.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("\n"),
        }
    }

    fn from_form(f: &ImageForm, new: bool, action: String, recipes: Vec<String>) -> Self {
        Self {
            new,
            action,
            name: f.name.clone(),
            display_name: f.display_name.clone(),
            description: f.description.clone(),
            reference: f.reference.clone(),
            kind: f.kind.clone(),
            cpu: f.cpu.clone(),
            memory: f.memory.clone(),
            port: f.port.clone(),
            command: f.command.clone(),
            recipe: f.recipe.clone(),
            recipes,
            enabled: f.enabled.is_some(),
            contract: f.contract.clone(),
            placement: f.placement.clone(),
        }
    }
}

struct ImageRow {
    name: String,
    display_name: String,
    kind: &'static str,
    reference: String,
    resources: String,
    present: String,
    build: String,
    build_failed: bool,
    building: bool,
    has_recipe: bool,
    enabled: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_images.html")]
struct ImagesPage {
    c: Chrome,
    admin_tab: &'static str,
    images: Vec<ImageRow>,
    form: ImageFormView,
    error: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_image_edit.html")]
struct EditPage {
    c: Chrome,
    admin_tab: &'static str,
    form: ImageFormView,
    error: Option<String>,
}

async fn images_page(
    state: &AppState,
    page: &Page,
    form: ImageFormView,
    error: Option<String>,
) -> Result<ImagesPage, AppError> {
    let images = state
        .hub()
        .catalogue()
        .list()
        .await?
        .into_iter()
        .map(|s| ImageRow {
            building: s.build.as_ref().is_some_and(|b| !b.is_final()),
            build_failed: s.build.as_ref().is_some_and(|b| b.failed),
            build: s.build.as_ref().map(|b| b.message.clone()).unwrap_or_default(),
            present: s
                .local
                .as_ref()
                .map(|l| format!("{} · {}", short_id(&l.digest), format_bytes(l.size_bytes)))
                .unwrap_or_default(),
            has_recipe: s.image.fields.recipe.is_some(),
            name: s.image.name.clone(),
            display_name: s.image.fields.display_name.clone(),
            kind: s.image.fields.kind.as_str(),
            reference: s.image.fields.reference.to_string(),
            resources: format!(
                "{} CPU, {}",
                format_cpu(s.image.fields.cpu_millis),
                format_bytes(s.image.fields.memory_bytes)
            ),
            enabled: s.image.fields.enabled,
        })
        .collect();
    Ok(ImagesPage { c: page.chrome("admin"), admin_tab: "images", images, form, error })
}

fn recipes(state: &AppState) -> Vec<String> {
    state.hub().catalogue().recipe_names()
}

/// `GET /hub/admin/images` (admins): the catalogue and the add form.
pub async fn list(State(state): State<AppState>, AdminUser(_): AdminUser, page: Page) -> Result<Response, AppError> {
    let view = images_page(&state, &page, ImageFormView::blank(recipes(&state)), None).await?;
    Ok(page.render(view))
}

#[derive(Deserialize)]
pub struct ImageForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    memory: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    recipe: String,
    #[serde(default)]
    enabled: Option<String>,
    #[serde(default)]
    contract: String,
    #[serde(default)]
    placement: String,
}

impl ImageForm {
    fn input(&self) -> ImageInput {
        ImageInput {
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            reference: self.reference.clone(),
            kind: self.kind.clone(),
            port: Some(Amount::Text(self.port.clone())),
            command: Some(Command::Line(self.command.clone())),
            cpu: Amount::Text(self.cpu.clone()),
            memory: Amount::Text(self.memory.clone()),
            enabled: self.enabled.is_some(),
            recipe: Some(self.recipe.clone()),
            contract: Some(self.contract.clone()),
            placement: Some(crate::images_input::Command::Line(self.placement.clone())),
        }
    }
}

/// `POST /hub/admin/images` (admins): adds an entry.
pub async fn add(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    CsrfForm(form): CsrfForm<ImageForm>,
) -> Result<Response, AppError> {
    let result = match form.input().into_fields() {
        Ok(fields) => {
            state.hub().catalogue().add(Actor::User(&me), form.name.trim(), fields).await.map_err(AppError::from)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(i) => Ok(redirect_with_flash(&state, "/hub/admin/images", &format!("Added {}.", i.fields.display_name))),
        Err(
            e @ (AppError::BadRequest(_) | AppError::Service(ServiceError::Invalid(_) | ServiceError::Conflict(_))),
        ) => {
            let status = e.status();
            let view = ImageFormView::from_form(&form, true, "/hub/admin/images".into(), recipes(&state));
            let view = images_page(&state, &page, view, Some(e.to_string())).await?;
            Ok(page.render_status(status, view))
        }
        Err(e) => Err(e),
    }
}

/// `GET /hub/admin/images/{name}` (admins): the edit form.
pub async fn edit_form(
    State(state): State<AppState>,
    AdminUser(_): AdminUser,
    page: Page,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let image = state.hub().catalogue().get(&name).await?;
    let view = EditPage {
        c: page.chrome("admin"),
        admin_tab: "images",
        form: ImageFormView::of(&image, recipes(&state)),
        error: None,
    };
    Ok(page.render(view))
}

/// `POST /hub/admin/images/{name}` (admins): saves an entry.
pub async fn edit(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    page: Page,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<ImageForm>,
) -> Result<Response, AppError> {
    let result = match form.input().into_fields() {
        Ok(fields) => state.hub().catalogue().update(Actor::User(&me), &name, fields).await.map_err(AppError::from),
        Err(e) => Err(e),
    };
    match result {
        Ok(i) => Ok(redirect_with_flash(&state, "/hub/admin/images", &format!("Saved {}.", i.fields.display_name))),
        Err(e @ (AppError::BadRequest(_) | AppError::Service(ServiceError::Invalid(_)))) => {
            let status = e.status();
            let mut view = ImageFormView::from_form(&form, false, format!("/hub/admin/images/{name}"), recipes(&state));
            view.name = name;
            let view =
                EditPage { c: page.chrome("admin"), admin_tab: "images", form: view, error: Some(e.to_string()) };
            Ok(page.render_status(status, view))
        }
        Err(e) => Err(e),
    }
}

/// `POST /hub/admin/images/{name}/build` (admins): builds it from its recipe.
pub async fn build(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    Ok(match state.hub().catalogue().build(Actor::User(&me), &name).await {
        Ok(_) => redirect_with_flash(&state, "/hub/admin/images", &format!("Building {name}; progress below.")),
        Err(e @ (ServiceError::Conflict(_) | ServiceError::NotFound(_) | ServiceError::Unavailable(_))) => {
            redirect_with_error(&state, "/hub/admin/images", &e.to_string())
        }
        Err(e) => return Err(e.into()),
    })
}

/// `POST /hub/admin/images/{name}/delete` (admins): removes the entry.
pub async fn delete(
    State(state): State<AppState>,
    AdminUser(me): AdminUser,
    Path(name): Path<String>,
    CsrfForm(_): CsrfForm<Empty>,
) -> Result<Response, AppError> {
    state.hub().catalogue().remove(Actor::User(&me), &name).await?;
    Ok(redirect_with_flash(&state, "/hub/admin/images", &format!("Removed {name} from the catalogue.")))
}
