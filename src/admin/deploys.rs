//! The deploy routes: `POST /api/v1/actors/{path}/deploy` (202), `GET
//! /api/v1/actors/{path}/deploys`, `POST /api/v1/actors/{path}/deploys/{id}/confirm`
//! (reached through the catch-all actor routes, see [`get_request`] and
//! [`post_request`]), and the same for warden's own `[self]` deploy under
//! `/api/v1/admin/`: `POST deploy`, `GET deploys`, `POST deploys/{id}/confirm`.

use actix_web::{web, HttpRequest, HttpResponse};

use super::{ask, json, AdminState, ApiError, Authorized};
use crate::control::protocol::Request;

/// The deploy request a GET of `/api/v1/actors/{raw}` names, if it names one.
pub(super) fn get_request(raw: &str) -> Option<Request> {
    let target = raw.strip_suffix("/deploys")?;
    (!target.is_empty()).then(|| Request::Deploys {
        path: target.to_owned(),
    })
}

/// The deploy request a POST of `/api/v1/actors/{raw}` names, if it names one.
pub(super) fn post_request(raw: &str) -> Option<Request> {
    if let Some(target) = raw.strip_suffix("/deploy") {
        return (!target.is_empty()).then(|| Request::Deploy {
            path: target.to_owned(),
        });
    }
    let rest = raw.strip_suffix("/confirm")?;
    let (rest, id) = rest.rsplit_once('/')?;
    let target = rest.strip_suffix("/deploys")?;
    (!target.is_empty() && !id.is_empty()).then(|| Request::ConfirmDeploy {
        path: target.to_owned(),
        id: id.to_owned(),
    })
}

/// `POST /api/v1/admin/deploy`: warden's own deploy.
pub(super) async fn deploy_self(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    json(ask(&state, Request::Deploy { path: "/".into() }).await?)
}

/// `GET /api/v1/admin/deploys`.
pub(super) async fn deploys_self(
    _: Authorized,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    json(ask(&state, Request::Deploys { path: "/".into() }).await?)
}

/// `POST /api/v1/admin/deploys/{id}/confirm`.
pub(super) async fn confirm_self(
    _: Authorized,
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let id = req.match_info().query("id").to_owned();
    json(
        ask(
            &state,
            Request::ConfirmDeploy {
                path: "/".into(),
                id,
            },
        )
        .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_routes_are_told_apart_from_actor_paths() {
        assert_eq!(
            post_request("app/api/deploy"),
            Some(Request::Deploy {
                path: "app/api".into()
            })
        );
        assert_eq!(
            post_request("app/api/deploys/0123abcd/confirm"),
            Some(Request::ConfirmDeploy {
                path: "app/api".into(),
                id: "0123abcd".into()
            })
        );
        assert_eq!(post_request("app/api/restart"), None);
        assert_eq!(post_request("deploy"), None);
        assert_eq!(post_request("app/x/confirm"), None);
        assert_eq!(
            get_request("app/api/deploys"),
            Some(Request::Deploys {
                path: "app/api".into()
            })
        );
        assert_eq!(get_request("deploys"), None);
    }
}
