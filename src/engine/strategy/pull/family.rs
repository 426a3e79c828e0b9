//! The release family as preflight finds it: each moved service as it runs
//! and as its compose files write it (where its version is pinned), the
//! newest release when asked for `latest`, and the problems that keep a
//! service from moving (files missing, versions that disagree, a version
//! variable used elsewhere).

use std::collections::BTreeMap;

use super::{Member, Pull};
use crate::engine::pin::{self, EnvFiles, Located, Pin, Place};
use crate::engine::preflight::Problem;
use crate::ops::compose_file::{scan, Scan};
use crate::ops::docker::{without_digest, Container, ImageRef};
use crate::ops::versions::{self, Http};
use crate::version::same_version;

/// What preflight learns about one service of the family.
pub(super) struct Found {
    pub(super) member: Member,
    pub(super) place: Option<Place>,
}

impl Pull {
    pub(super) fn compose_files_exist(&self) -> Vec<Problem> {
        self.project
            .files
            .iter()
            .filter(|file| !file.is_file())
            .map(|file| {
                Problem::new(
                    "compose",
                    format!(
                        "compose file {} does not exist (from the container's labels or UPGRADERD_COMPOSE_FILES)",
                        file.display()
                    ),
                )
            })
            .collect()
    }

    /// Each moved service as it runs and as its files write it; problems for what cannot move.
    pub(super) fn find_members(&self) -> std::result::Result<Vec<Found>, Vec<Problem>> {
        let files: std::result::Result<(Scan, EnvFiles), String> = scan(&self.project.files)
            .map_err(|e| format!("{e:#}"))
            .and_then(|scan| Ok((scan, EnvFiles::of(&self.project)?)));
        let rendered = match self.compose.service_images(&self.project) {
            Ok(rendered) => rendered.into_iter().collect::<BTreeMap<String, String>>(),
            Err(e) => {
                // A tag whose variable nothing sets may not render at all: where it is written says why.
                let pins: Vec<Problem> = match &files {
                    Ok((scan, env)) => self
                        .project
                        .services
                        .iter()
                        .filter_map(|service| pin::locate(service, scan, env, &self.project).err())
                        .map(|why| Problem::new("pin", why))
                        .collect(),
                    Err(_) => Vec::new(),
                };
                let render = Problem::new("compose", format!("the compose configuration does not render: {e:#}"));
                return Err(if pins.is_empty() { vec![render] } else { pins });
            }
        };
        let containers = self.docker.project_containers(&self.project.name).unwrap_or_default();
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for service in &self.project.services {
            let Some(rendered) = rendered.get(service) else { continue };
            let container = containers.iter().find(|c| self.project.service_of(c).as_deref() == Some(service));
            let container =
                if service == &self.project.service { self.primary.as_ref().or(container) } else { container };
            match self.member(service, rendered, container, &files) {
                Ok(member) => found.push(member),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(found)
        } else {
            Err(problems)
        }
    }

    fn member(
        &self,
        service: &str,
        rendered: &str,
        container: Option<&Container>,
        files: &std::result::Result<(Scan, EnvFiles), String>,
    ) -> std::result::Result<Found, Problem> {
        let runs = container.map_or(rendered, |c| without_digest(&c.config.image));
        let running_tag = ImageRef::parse(runs).tag;
        let channel = !running_tag.is_empty() && !pin::names_a_version(&running_tag);
        let located = match files {
            Ok((scan, env)) => pin::locate(service, scan, env, &self.project),
            Err(e) => Err(e.clone()),
        };
        let (place, written) = match located {
            Ok(Located { pin: Pin::Version(place), .. }) => (Some(place.clone()), Some(place)),
            Ok(Located { pin: Pin::Moving { written }, .. }) => {
                (written.clone().filter(|_| self.pin_channels), written)
            }
            // A channel moves by its tag; where it is written does not matter.
            Err(_) if channel && !self.pin_channels => (None, None),
            Err(why) => return Err(Problem::new("pin", why)),
        };
        if runs != rendered {
            let setter = written.map_or_else(
                || "the compose files set".to_string(),
                |p| format!("{}:{} sets", p.file.display(), p.line),
            );
            return Err(Problem::new(
                "compose",
                format!(
                    "{setter} the image of service {service} to {rendered}, but the service runs {runs}: bring \
                     them in line first (`compose up -d {service}`, or put the files back), so that the files name \
                     what runs"
                ),
            ));
        }
        let mut previous_ref = rendered.to_string();
        if service == self.project.service {
            if let Some(image) = &self.configured_image {
                // UPGRADERD_IMAGE names the repository; the tag the service runs stays the one that moves.
                previous_ref = ImageRef::parse(image).with_tag(&running_tag);
            }
        }
        let member = Member {
            service: service.to_string(),
            previous_image_id: container.map(|c| c.image.clone()),
            target_ref: previous_ref.clone(),
            retag: place.is_none(),
            previous_ref,
        };
        Ok(Found { member, place })
    }

    /// The newest release tag of the primary's repository, for `latest` asked of a pinned family.
    pub(super) fn newest_release(&self, primary: &Member) -> std::result::Result<String, Problem> {
        let repository = ImageRef::parse(&primary.previous_ref);
        let tags = versions::registry_tags(&Http::new(None), &repository)
            .map_err(|e| Problem::from_error("registry", &e.context("finding the newest release for `latest`")))?;
        versions::newest_tag(&tags, &repository.tag, self.allow_prerelease).ok_or_else(|| {
            Problem::new(
                "version",
                format!(
                    "{} has no release tag (a version after an optional `v`) to take for `latest`; name the version \
                     to move to",
                    repository.repository
                ),
            )
        })
    }

    /// Every member must be on the primary's version, so that one version moves them all.
    pub(super) fn one_version(&self, members: &[Member]) -> Vec<Problem> {
        let Some((primary, rest)) = members.split_first() else { return Vec::new() };
        let primary_tag = ImageRef::parse(&primary.previous_ref).tag;
        rest.iter()
            .filter(|m| !same_version(&ImageRef::parse(&m.previous_ref).tag, &primary_tag))
            .map(|m| {
                Problem::new(
                    "family",
                    format!(
                        "service {} runs {}, not version {primary_tag} like {}: an upgrade moves every service of the \
                         family to one version. Leave {} out of UPGRADERD_SERVICES (its data is backed up with the \
                         project's whether it moves or not), or pin it to {primary_tag} first",
                        m.service, m.previous_ref, primary.service, m.service
                    ),
                )
            })
            .collect()
    }

    /// A variable that carries the version and is used elsewhere would change
    /// that too: on another line, or as the tag of a service that does not move.
    pub(super) fn variables_used_elsewhere(&self, places: &[Place]) -> Vec<Problem> {
        let Ok(scan) = scan(&self.project.files) else { return Vec::new() };
        let env = EnvFiles::of(&self.project).unwrap_or_default();
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for variable in places.iter().filter_map(|p| p.variable.as_ref()) {
            if seen.contains(variable) {
                continue;
            }
            seen.push(variable.clone());
            let left_behind: Vec<&String> = scan
                .images
                .keys()
                .filter(|service| !self.project.services.contains(service))
                .filter(|service| pin::tag_variable(service, &scan, &env, &self.project).as_ref() == Some(variable))
                .collect();
            if let Some(service) = left_behind.first() {
                problems.push(Problem::new(
                    "family",
                    format!(
                        "service {service} also takes its version from {variable}, but UPGRADERD_SERVICES does not \
                         name it: changing {variable} would move it without recreating it. Name it in UPGRADERD_SERVICES"
                    ),
                ));
            }
            let uses = pin::other_uses(&scan, variable);
            if !uses.is_empty() {
                problems.push(Problem::new(
                    "pin",
                    format!(
                        "{variable} carries the version and is also used at {}; changing it would change that too. \
                         Give the version a variable of its own",
                        uses.join(", ")
                    ),
                ));
            }
        }
        problems
    }
}
