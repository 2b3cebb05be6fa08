//! A token drawn as a QR symbol. The `qrcode` crate encodes (segments, version, error
//! correction, placement, masking); this module only chooses the mask.
//!
//! Why: `qrcode` scores the eight candidate masks with a finder-pattern penalty that allocates a
//! boxed closure per module, so one of our 169-character tokens took about 1.7 ms of CPU to
//! encode, nine tenths of it in mask scoring, on a path every citizen's phone calls every 60 to
//! 120 s while waiting at the till. The penalty below is ISO/IEC 18004:2015 section 7.8.3 (rules
//! N1 to N4) over a byte grid; the chosen mask is written into the symbol's format information by
//! `qrcode` as usual, so any reader decodes it.

use std::fmt::Write;

use qrcode::bits::encode_auto;
use qrcode::canvas::{Canvas, MaskPattern};
use qrcode::ec::construct_codewords;
use qrcode::types::{QrError, Version};
use qrcode::{Color, EcLevel};

/// Error correction level M: about 15% of the symbol may be damaged (a cracked phone screen).
const EC_LEVEL: EcLevel = EcLevel::M;
/// The quiet zone the standard requires around a QR (not Micro QR) symbol, in modules.
const QUIET_ZONE_MODULES: usize = 4;
/// Smallest SVG side, in pixels, so that a phone shows it large enough to scan.
const MIN_SIDE_PX: usize = 240;

const ALL_MASKS: [MaskPattern; 8] = [
    MaskPattern::Checkerboard,
    MaskPattern::HorizontalLines,
    MaskPattern::VerticalLines,
    MaskPattern::DiagonalLines,
    MaskPattern::LargeCheckerboard,
    MaskPattern::Fields,
    MaskPattern::Diamonds,
    MaskPattern::Meadow,
];

/// The modules of a QR symbol, row by row, without the quiet zone.
pub struct QrSymbol {
    pub width_modules: usize,
    pub colors: Vec<Color>,
    /// The mask chosen, as the standard numbers them (0 to 7).
    pub mask: u8,
}

impl QrSymbol {
    /// Encodes `data` at level M with the mask of the lowest penalty.
    pub fn encode(data: &[u8]) -> Result<QrSymbol, QrError> {
        let bits = encode_auto(data, EC_LEVEL)?;
        let version = bits.version();
        if !matches!(version, Version::Normal(_)) {
            // encode_auto only chooses normal versions; the eight masks below are theirs.
            return Err(QrError::InvalidVersion);
        }
        let (data_codewords, ec_codewords) = construct_codewords(&bits.into_bytes(), version, EC_LEVEL)?;
        let mut unmasked = Canvas::new(version, EC_LEVEL);
        unmasked.draw_all_functional_patterns();
        unmasked.draw_data(&data_codewords, &ec_codewords);
        let width_modules = version.width().unsigned_abs() as usize;
        let (mask, colors) = ALL_MASKS
            .iter()
            .map(|mask| {
                let mut canvas = unmasked.clone();
                canvas.apply_mask(*mask);
                (*mask as u8, canvas.into_colors())
            })
            .min_by_key(|(_, colors)| penalty(&dark_grid(colors), width_modules))
            .ok_or(QrError::InvalidVersion)?;
        Ok(QrSymbol { width_modules, colors, mask })
    }

    /// The symbol as an SVG image with its quiet zone: one square unit per module (the
    /// `viewBox`), drawn at a whole number of pixels per module, each row's runs of dark modules
    /// as one path (about a quarter of the size of one rectangle per module).
    pub fn svg(&self) -> String {
        let side_modules = self.width_modules + 2 * QUIET_ZONE_MODULES;
        let side_px = side_modules * MIN_SIDE_PX.div_ceil(side_modules);
        let mut svg = format!(
            concat!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{px}" height="{px}" "#,
                r#"viewBox="0 0 {n} {n}" shape-rendering="crispEdges">"#,
                r##"<rect width="{n}" height="{n}" fill="#fff"/><path fill="#000" d=""##
            ),
            px = side_px,
            n = side_modules
        );
        for (y, row) in self.colors.chunks_exact(self.width_modules.max(1)).enumerate() {
            let mut x = 0;
            while x < row.len() {
                let run = row[x..].iter().take_while(|c| **c == Color::Dark).count();
                if run > 0 {
                    let (left, top) = (x + QUIET_ZONE_MODULES, y + QUIET_ZONE_MODULES);
                    // Writing to a String cannot fail.
                    let _ = write!(svg, "M{left} {top}h{run}v1h-{run}z");
                }
                x += run.max(1);
            }
        }
        svg.push_str(r#""/></svg>"#);
        svg
    }
}

fn dark_grid(colors: &[Color]) -> Vec<bool> {
    colors.iter().map(|c| *c == Color::Dark).collect()
}

/// The mask penalty of ISO/IEC 18004:2015, 7.8.3.1, of a `width`×`width` grid (true = dark).
pub fn penalty(dark: &[bool], width: usize) -> u32 {
    assert_eq!(dark.len(), width * width, "a square grid");
    let mut transposed = Vec::with_capacity(dark.len());
    for x in 0..width {
        transposed.extend((0..width).map(|y| dark[y * width + x]));
    }
    let lines = dark.chunks_exact(width.max(1)).chain(transposed.chunks_exact(width.max(1)));
    let line_score: u32 = lines.map(|line| runs_penalty(line) + finder_like_penalty(line)).sum();
    line_score + blocks_penalty(dark, width) + balance_penalty(dark)
}

/// N1: a run of five or more modules of one colour costs 3, plus 1 per module beyond five.
fn runs_penalty(line: &[bool]) -> u32 {
    let mut score = 0;
    let mut run = 1u32;
    for i in 1..=line.len() {
        if i < line.len() && line[i] == line[i - 1] {
            run += 1;
            continue;
        }
        if run >= 5 {
            score += 3 + (run - 5);
        }
        run = 1;
    }
    score
}

/// N3: dark-light-dark-dark-dark-light-dark (1:1:3:1:1) with four light modules on either side
/// looks like a finder pattern: 40 each. Outside the symbol is the light quiet zone.
fn finder_like_penalty(line: &[bool]) -> u32 {
    const PATTERN: [bool; 7] = [true, false, true, true, true, false, true];
    let all_light = |modules: &[bool]| modules.iter().all(|dark| !dark);
    let mut score = 0;
    for j in 0..line.len().saturating_sub(6) {
        if line[j..j + 7] != PATTERN {
            continue;
        }
        let before = &line[j.saturating_sub(4)..j];
        let after = &line[j + 7..(j + 11).min(line.len())];
        if all_light(before) || all_light(after) {
            score += 40;
        }
    }
    score
}

/// N2: every 2×2 block of one colour (overlapping ones counted) costs 3.
fn blocks_penalty(dark: &[bool], width: usize) -> u32 {
    let rows = dark.chunks_exact(width.max(1));
    let pairs = rows.clone().zip(rows.skip(1));
    let same = |top: &[bool], bottom: &[bool]| {
        (0..width - 1)
            .filter(|&x| {
                let first = top[x];
                top[x + 1] == first && bottom[x] == first && bottom[x + 1] == first
            })
            .count() as u32
    };
    pairs.map(|(top, bottom)| 3 * same(top, bottom)).sum()
}

/// N4: 10 for every full 5% that the share of dark modules is away from 50%.
fn balance_penalty(dark: &[bool]) -> u32 {
    let total = dark.len().max(1);
    let dark_count = dark.iter().filter(|d| **d).count();
    // |dark/total - 1/2| / 5%  =  |2·dark - total| · 10 / total, rounded down.
    let steps = (2 * dark_count).abs_diff(total) * 10 / total;
    10 * steps as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(rows: &[&str]) -> (Vec<bool>, usize) {
        (rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect(), rows.len())
    }

    #[test]
    fn runs_cost_three_at_five_and_one_per_module_beyond() {
        let (row, _) = grid(&["#####.....######"]);
        // 5 dark: 3; 5 light: 3; 6 dark: 4.
        assert_eq!(runs_penalty(&row), 10);
        let (row, _) = grid(&["####.####"]);
        assert_eq!(runs_penalty(&row), 0);
    }

    #[test]
    fn finder_like_pattern_needs_four_light_modules_beside_it() {
        let (row, _) = grid(&["....#.###.#"]);
        assert_eq!(finder_like_penalty(&row), 40);
        // At the edge, the quiet zone counts as light.
        let (row, _) = grid(&["#.###.#"]);
        assert_eq!(finder_like_penalty(&row), 40);
        let (row, _) = grid(&["#...#.###.#...#"]);
        assert_eq!(finder_like_penalty(&row), 0);
    }

    #[test]
    fn blocks_and_balance() {
        let (dark, width) = grid(&["###", "###", "..."]);
        assert_eq!(blocks_penalty(&dark, width), 6);
        // 6 of 9 dark: 66.7%, three full 5% steps from 50%.
        assert_eq!(balance_penalty(&dark), 30);
        let (dark, _) = grid(&["#.", ".#"]);
        assert_eq!(balance_penalty(&dark), 0);
    }

    #[test]
    fn columns_are_scored_like_rows() {
        let (dark, width) = grid(&["#....", "#....", "#....", "#....", "#...."]);
        let transposed: Vec<bool> =
            (0..width * width).map(|i| dark[(i % width) * width + i / width]).collect();
        assert_eq!(penalty(&dark, width), penalty(&transposed, width));
    }
}
