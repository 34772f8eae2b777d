//! Lab and recipe models: parsed once, validated at the edge.
//!
//! - [`yaml`]: span-aware reading (every diagnostic has file:line:col and a
//!   dotted field path; unknown keys get a "did you mean"; duplicate keys fail).
//! - [`types`]: newtypes (host names, vmids, CIDRs, sizes, ports, secret refs).
//! - [`lab`]: `lab/*.yaml`; [`recipe`]: `images/*.yaml`.
//! - [`load_all`]: a lab plus the recipes it uses, cross-checked, with every
//!   problem from every file in one [`BadInput`].

pub mod backup;
mod check;
pub mod lab;
mod lab_parse;
pub mod metrics;
pub mod monitoring;
mod paths;
pub mod recipe;
mod roles_parse;
pub mod types;
pub mod updates;
pub mod volume;
pub mod yaml;

use std::path::Path;

use anyhow::Result;

use crate::diag::BadInput;
use lab::Lab;
use recipe::Recipe;

/// A lab with the recipes from its images directory, all checked together.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub lab: Lab,
    /// Every recipe in the directory (sorted by file name), used or not.
    pub recipes: Vec<Recipe>,
}

impl Loaded {
    /// The recipe a guest's `image` names (always present after [`load_all`]).
    pub fn recipe(&self, name: &str) -> Option<&Recipe> {
        self.recipes.iter().find(|r| r.name == name)
    }
}

/// Loads the lab and every recipe in `images_dir`, and checks that each
/// guest's image exists, has the guest's kind and installs what its roles need.
pub fn load_all(lab_path: &Path, images_dir: &Path) -> Result<Loaded> {
    let recipes = recipe::load_dir_diags(images_dir);
    let lab = lab_parse::load(lab_path);
    match (lab, recipes) {
        (Ok(lab), Ok(recipes)) => {
            let mut ctx = yaml::Ctx::new(&lab.path);
            ctx.spans = lab.spans.clone();
            check::images(&lab, &recipes, &mut ctx);
            if ctx.has_errors() {
                return Err(BadInput(ctx.finish()).into());
            }
            Ok(Loaded { lab, recipes })
        }
        (lab, recipes) => {
            let mut all = Vec::new();
            if let Err(d) = lab {
                all.extend(d);
            }
            if let Err(d) = recipes {
                all.extend(d);
            }
            Err(BadInput(all).into())
        }
    }
}
