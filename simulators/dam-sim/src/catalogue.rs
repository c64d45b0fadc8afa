//! The in-memory asset catalogue every simulated API reads from.
//!
//! One catalogue backs all three APIs: an asset id is the Cloudinary `asset_id`, the Bynder
//! media `id` and the generic `id` at once. `fields` are vendor-neutral (title, description,
//! sku, tags, colors, width, height, format, url, ...); each API renders them its own way.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::timefmt::{iso_millis, now_ms};

/// One asset as the simulator stores it. Deleted assets stay as tombstones so the generic
/// change feed can report them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimAsset {
    pub id: String,
    /// Bumped by every change, starting at 1 (the generic contract's `version`).
    pub version: i64,
    pub created_at_ms: i64,
    /// When the asset's file was last uploaded: its creation (or re-creation), or a change of
    /// one of [`FILE_KEYS`]. Cloudinary's `version` is this second: metadata, tags, context
    /// and renames leave it alone.
    #[serde(default)]
    pub uploaded_at_ms: i64,
    /// Strictly increasing across the catalogue: no two changes share a millisecond.
    pub modified_at_ms: i64,
    pub deleted: bool,
    pub fields: Map<String, Value>,
}

impl SimAsset {
    /// The generic-contract JSON of this asset.
    pub fn to_generic_json(&self) -> Value {
        json!({
            "id": self.id,
            "version": self.version,
            "modified_at": iso_millis(self.modified_at_ms),
            "deleted": self.deleted,
            "fields": self.fields,
        })
    }

    pub(crate) fn str_field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// The fields that stand for the asset's file: changing one is a new upload (Cloudinary's
/// `upload` notification with `overwritten`, a new `version`).
pub const FILE_KEYS: &[&str] = &["file_version", "file_content", "url"];

/// Whether going from `before` to `after` replaces the file.
pub fn file_changed(before: &Map<String, Value>, after: &Map<String, Value>) -> bool {
    FILE_KEYS.iter().any(|k| before.get(*k) != after.get(*k))
}

/// What a catalogue change was, for webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Created,
    Updated,
    Deleted,
}

#[derive(Debug, Default)]
pub(crate) struct Catalogue {
    assets: HashMap<String, SimAsset>,
    last_ms: i64,
    /// 0: wall clock. Otherwise each change is `step_ms` after the previous one (the first
    /// at the wall clock), so tests can spread changes over seconds without sleeping.
    step_ms: i64,
}

impl Catalogue {
    pub fn new(step_ms: u64) -> Self {
        Self {
            step_ms: step_ms as i64,
            ..Self::default()
        }
    }

    /// Next modification time: strictly after the previous change so "(modified_at, id)"
    /// orderings never tie inside one catalogue.
    fn tick(&mut self) -> i64 {
        self.last_ms = if self.step_ms > 0 && self.last_ms > 0 {
            self.last_ms + self.step_ms
        } else {
            now_ms().max(self.last_ms + 1)
        };
        self.last_ms
    }

    /// Creates the asset or replaces its fields (a deleted id comes back to life).
    pub fn upsert(&mut self, id: &str, fields: Map<String, Value>) -> (SimAsset, ChangeType) {
        let now = self.tick();
        let change;
        let asset = match self.assets.get_mut(id) {
            Some(a) => {
                change = if a.deleted {
                    a.created_at_ms = now;
                    a.uploaded_at_ms = now;
                    ChangeType::Created
                } else {
                    if file_changed(&a.fields, &fields) {
                        a.uploaded_at_ms = now;
                    }
                    ChangeType::Updated
                };
                a.version += 1;
                a.modified_at_ms = now;
                a.deleted = false;
                a.fields = fields;
                a.clone()
            }
            None => {
                change = ChangeType::Created;
                let a = SimAsset {
                    id: id.to_owned(),
                    version: 1,
                    created_at_ms: now,
                    uploaded_at_ms: now,
                    modified_at_ms: now,
                    deleted: false,
                    fields,
                };
                self.assets.insert(id.to_owned(), a.clone());
                a
            }
        };
        (asset, change)
    }

    /// Merges top-level fields into a live asset (`null` removes a field).
    pub fn patch(&mut self, id: &str, patch: Map<String, Value>) -> Option<SimAsset> {
        let live = self.assets.get(id).is_some_and(|a| !a.deleted);
        if !live {
            return None;
        }
        let now = self.tick();
        let a = self.assets.get_mut(id)?;
        let before = a.fields.clone();
        for (k, v) in patch {
            if v.is_null() {
                a.fields.remove(&k);
            } else {
                a.fields.insert(k, v);
            }
        }
        if file_changed(&before, &a.fields) {
            a.uploaded_at_ms = now;
        }
        a.version += 1;
        a.modified_at_ms = now;
        Some(a.clone())
    }

    /// Marks a live asset deleted; `None` when it is unknown or already deleted.
    pub fn delete(&mut self, id: &str) -> Option<SimAsset> {
        let live = self.assets.get(id).is_some_and(|a| !a.deleted);
        if !live {
            return None;
        }
        let now = self.tick();
        let a = self.assets.get_mut(id)?;
        a.deleted = true;
        a.version += 1;
        a.modified_at_ms = now;
        Some(a.clone())
    }

    pub fn get(&self, id: &str) -> Option<&SimAsset> {
        self.assets.get(id)
    }

    pub fn live(&self, id: &str) -> Option<&SimAsset> {
        self.assets.get(id).filter(|a| !a.deleted)
    }

    /// Every asset, tombstones included, ordered by (modified_at, id).
    pub fn all_by_modified(&self) -> Vec<&SimAsset> {
        let mut v: Vec<&SimAsset> = self.assets.values().collect();
        v.sort_by(|a, b| (a.modified_at_ms, &a.id).cmp(&(b.modified_at_ms, &b.id)));
        v
    }

    pub fn live_assets(&self) -> Vec<&SimAsset> {
        self.all_by_modified()
            .into_iter()
            .filter(|a| !a.deleted)
            .collect()
    }
}

const ADJECTIVES: &[&str] = &[
    "Classic", "Urban", "Vintage", "Slim", "Organic", "Premium", "Compact", "Rugged", "Soft",
    "Bold",
];
const PRODUCTS: &[&str] = &[
    "Sneaker", "Backpack", "Jacket", "Lamp", "Mug", "Chair", "Watch", "Scarf", "Bottle", "Desk",
];
const COLORS: &[&str] = &[
    "red", "blue", "green", "black", "white", "yellow", "grey", "navy", "beige", "orange",
];
const TAGS: &[&str] = &[
    "summer",
    "winter",
    "catalog",
    "hero",
    "packshot",
    "lifestyle",
    "web",
    "print",
    "sale",
    "new",
];
const CATEGORIES: &[&str] = &["footwear", "bags", "outerwear", "home", "accessories"];
const SIZES: &[(i64, i64)] = &[
    (800, 600),
    (1200, 1200),
    (1920, 1080),
    (2048, 1536),
    (600, 900),
];
const FORMATS: &[&str] = &["jpg", "png", "webp"];

/// Deterministic asset `index` of a generated batch: the same (seed, index) always gives the
/// same id and fields.
pub fn generated_asset(seed: u64, index: u64) -> (String, Map<String, Value>) {
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index);
    let id: String = (0..32)
        .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
        .collect();
    let adjective = ADJECTIVES[rng.usize(..ADJECTIVES.len())];
    let product = PRODUCTS[rng.usize(..PRODUCTS.len())];
    let color = COLORS[rng.usize(..COLORS.len())];
    let mut colors = vec![color.to_owned()];
    if rng.bool() {
        let second = COLORS[rng.usize(..COLORS.len())];
        if second != color {
            colors.push(second.to_owned());
        }
    }
    let mut tags: Vec<String> = Vec::new();
    for _ in 0..rng.usize(1..4) {
        let t = TAGS[rng.usize(..TAGS.len())].to_owned();
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let (width, height) = SIZES[rng.usize(..SIZES.len())];
    let format = FORMATS[rng.usize(..FORMATS.len())];
    let sku = format!("SKU-{:05}", rng.u32(0..100_000));
    let title = format!("{adjective} {product} {}", capitalise(color));
    let description = format!(
        "{title}: {} shot of our {} {}, {width}x{height}.",
        if rng.bool() { "studio" } else { "lifestyle" },
        adjective.to_lowercase(),
        product.to_lowercase()
    );
    let category = CATEGORIES[rng.usize(..CATEGORIES.len())];
    let mut fields = Map::new();
    fields.insert("title".into(), json!(title));
    fields.insert("description".into(), json!(description));
    fields.insert("sku".into(), json!(sku));
    fields.insert("category".into(), json!(category));
    fields.insert("tags".into(), json!(tags));
    fields.insert("colors".into(), json!(colors));
    fields.insert("width".into(), json!(width));
    fields.insert("height".into(), json!(height));
    fields.insert("format".into(), json!(format));
    fields.insert("bytes".into(), json!(rng.u64(20_000..5_000_000)));
    fields.insert(
        "url".into(),
        json!(format!("https://cdn.dam-sim.test/assets/{id}.{format}")),
    );
    (id, fields)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_bump_version_and_strictly_increase_modified_time() {
        let mut c = Catalogue::default();
        let (a1, ch1) = c.upsert("a", Map::new());
        let (a2, ch2) = c.upsert("a", Map::new());
        assert_eq!((ch1, ch2), (ChangeType::Created, ChangeType::Updated));
        assert_eq!((a1.version, a2.version), (1, 2));
        assert!(a2.modified_at_ms > a1.modified_at_ms);
        let d = c.delete("a").expect("live asset deletes");
        assert!(d.deleted && d.version == 3 && d.modified_at_ms > a2.modified_at_ms);
        assert!(c.delete("a").is_none(), "already deleted");
        let mut stepped = Catalogue::new(700);
        let (x, _) = stepped.upsert("x", Map::new());
        let (y, _) = stepped.upsert("y", Map::new());
        assert_eq!(y.modified_at_ms - x.modified_at_ms, 700);
        assert!(c.live("a").is_none() && c.get("a").is_some());
        let (_, ch) = c.upsert("a", Map::new());
        assert_eq!(
            ch,
            ChangeType::Created,
            "a tombstone comes back as a creation"
        );
    }

    #[test]
    fn upload_time_moves_only_with_the_file() {
        let mut c = Catalogue::new(1_000);
        let fields = |title: &str, file: u64| {
            json!({"title": title, "file_version": file})
                .as_object()
                .cloned()
                .unwrap()
        };
        let (a, _) = c.upsert("a", fields("A", 1));
        assert_eq!(a.uploaded_at_ms, a.created_at_ms);
        let (b, _) = c.upsert("a", fields("B", 1));
        let p = c.patch("a", fields("C", 1)).unwrap();
        assert_eq!(
            (b.uploaded_at_ms, p.uploaded_at_ms),
            (a.uploaded_at_ms, a.uploaded_at_ms)
        );
        assert!(p.modified_at_ms > b.modified_at_ms && p.version == 3);
        for (i, key) in FILE_KEYS.iter().enumerate() {
            let mut patch = Map::new();
            patch.insert((*key).to_owned(), json!(format!("new {i}")));
            let n = c.patch("a", patch).unwrap();
            assert_eq!(n.uploaded_at_ms, n.modified_at_ms, "{key} is a new file");
        }
        let before = c.get("a").unwrap().uploaded_at_ms;
        let d = c.delete("a").unwrap();
        assert_eq!(d.uploaded_at_ms, before, "a delete uploads nothing");
        let (back, _) = c.upsert("a", fields("A", 1));
        assert_eq!(
            back.uploaded_at_ms, back.modified_at_ms,
            "a re-creation is an upload"
        );
    }

    #[test]
    fn generation_is_deterministic_per_seed() {
        assert_eq!(generated_asset(7, 3), generated_asset(7, 3));
        assert_ne!(generated_asset(7, 3).0, generated_asset(8, 3).0);
        assert_ne!(generated_asset(7, 3).0, generated_asset(7, 4).0);
        let (id, f) = generated_asset(1, 0);
        assert_eq!(id.len(), 32);
        assert!(f["sku"].as_str().unwrap().starts_with("SKU-"));
        assert!(
            f["url"]
                .as_str()
                .unwrap()
                .ends_with(f["format"].as_str().unwrap())
        );
    }
}
