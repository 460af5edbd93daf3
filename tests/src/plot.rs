//! Per-frame latency plots as PNG files, for reading a test or benchmark run at a glance.
//!
//! The text is rendered by plotters' pure-Rust `ab_glyph` path with a TrueType font read from
//! the system at run time (DejaVu Sans from Debian's `fonts-dejavu-core`, which `just setup`
//! installs), so neither fontconfig nor a committed font file is needed. `$PUNKTFUNK_PLOT_FONT`
//! names another `.ttf` to use instead.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Width and height of the plot in pixels.
pub const SIZE: (u32, u32) = (1280, 720);

/// Environment variable naming a TrueType font file to use instead of the system's DejaVu Sans.
pub const FONT_ENV: &str = "PUNKTFUNK_PLOT_FONT";

/// Where common distributions put a sans-serif TrueType font, tried in order.
const FONT_PATHS: &[&str] = &[
    // Debian, Ubuntu: fonts-dejavu-core.
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    // Fedora: dejavu-sans-fonts.
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    // Arch: ttf-dejavu.
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    // Alpine (font-dejavu), older Fedora.
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    // Debian, Ubuntu: fonts-liberation.
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The family every text of the plot is drawn in (the one plotters' own defaults use).
const FAMILY: &str = "sans-serif";

/// Series colors (Tableau 10), used in order and then again from the start.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The percentile whose maximum across the series, times [`HEADROOM`], sets the top of the
/// y axis.
pub const RANGE_PERCENTILE: f64 = 99.5;

/// How far above the highest [`RANGE_PERCENTILE`] the y axis reaches.
pub const HEADROOM: f64 = 1.2;

/// One line of the plot: per-frame latencies, `(frame index, microseconds)`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// `(frame index, latency in µs)`, in any order (the line joins them by frame index).
    pub points: Vec<(u64, f64)>,
}

/// The color of the `index`-th series of a plot.
pub fn series_color(index: usize) -> RGBColor {
    COLORS[index % COLORS.len()]
}

/// Writes a 1280×720 PNG to `out` plotting each series' latency (y, µs) against the frame index
/// (x): a line through the samples in frame order, a dot per sample, one color per series, with
/// a legend, axis labels and `title`.
///
/// The y axis runs from 0 to 1.2 × the highest 99.5th percentile (nearest rank) of the series,
/// not to the maximum, so that a few outliers do not flatten the plot. Samples above that are
/// not dropped: they are drawn on the top edge as triangles, and a note says how many there
/// are. Negative samples are drawn on the bottom edge. Samples that are not finite (NaN, ±∞)
/// are skipped; when no sample is left the plot says "no samples".
///
/// The file is always PNG, whatever `out`'s extension. Errors say what failed and what to do.
pub fn latency_plot(series: &[Series], title: &str, out: &Path) -> Result<(), String> {
    register_font()?;
    let (w, h) = SIZE;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let drawing = |e| {
            format!(
                "drawing the latency plot: {e} (if it is about the font, set ${FONT_ENV} to \
                 another .ttf file)"
            )
        };
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        draw(&root, series, title).map_err(drawing)?;
        root.present().map_err(drawing)?;
    }
    let png = encode_png(&rgb, SIZE).map_err(|e| format!("encoding the latency plot: {e}"))?;
    std::fs::write(out, png).map_err(|e| {
        format!(
            "writing the latency plot to {}: {e} (does its directory exist, and is it writable?)",
            out.display()
        )
    })
}

/// A series reduced to what is drawn: finite samples sorted by frame index.
struct Prepared {
    points: Vec<(u64, f64)>,
    /// The [`RANGE_PERCENTILE`] of the latencies, `None` without samples.
    percentile: Option<f64>,
}

impl Prepared {
    fn new(s: &Series) -> Self {
        let mut points: Vec<(u64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(_, y)| y.is_finite())
            .collect();
        points.sort_by_key(|&(x, _)| x);
        let mut ys: Vec<f64> = points.iter().map(|&(_, y)| y).collect();
        ys.sort_by(f64::total_cmp);
        Self {
            percentile: percentile(&ys, RANGE_PERCENTILE),
            points,
        }
    }
}

/// Nearest-rank percentile `p` (0–100) of sorted values; `None` when there are none.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Series],
    title: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let prepared: Vec<Prepared> = series.iter().map(Prepared::new).collect();

    let top = prepared
        .iter()
        .filter_map(|p| p.percentile)
        .fold(0.0, f64::max)
        * HEADROOM;
    let y_max = if top > 0.0 { top } else { 1.0 };
    let xs = prepared
        .iter()
        .flat_map(|p| p.points.iter().map(|&(x, _)| x));
    let (x_min, x_max) = xs
        .fold(None, |acc: Option<(u64, u64)>, x| match acc {
            None => Some((x, x)),
            Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
        })
        .unwrap_or((0, 1));
    let x_max = x_max.max(x_min.saturating_add(1));

    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 28))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)?;
    let y_format = |v: &f64| {
        if y_max >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    chart
        .configure_mesh()
        .x_desc("frame")
        .y_desc("latency (µs)")
        .y_label_formatter(&y_format)
        .axis_desc_style((FAMILY, 18))
        .label_style((FAMILY, 14))
        .draw()?;

    let mut clipped = 0usize;
    for (i, (s, p)) in series.iter().zip(&prepared).enumerate() {
        let color = series_color(i);
        let shown: Vec<(u64, f64)> = p
            .points
            .iter()
            .map(|&(x, y)| (x, y.clamp(0.0, y_max)))
            .collect();
        let label = match p.percentile {
            Some(p99) => format!(
                "{} (p{RANGE_PERCENTILE} {p99:.0} µs, n = {})",
                s.name,
                shown.len()
            ),
            None => format!("{} (no samples)", s.name),
        };
        chart
            .draw_series(LineSeries::new(
                shown.iter().copied(),
                color.stroke_width(1),
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        let (inside, above): (Vec<_>, Vec<_>) = p
            .points
            .iter()
            .zip(&shown)
            .partition(|((_, y), _)| *y <= y_max);
        clipped += above.len();
        chart.draw_series(
            inside
                .into_iter()
                .map(|(_, &xy)| Circle::new(xy, 2, color.filled())),
        )?;
        chart.draw_series(
            above
                .into_iter()
                .map(|(_, &xy)| TriangleMarker::new(xy, 6, color.filled())),
        )?;
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 16))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }

    let area = chart.plotting_area();
    let (px, py) = area.get_pixel_range();
    if clipped > 0 {
        // Below the plot, left of the centred "frame", where it cannot cover samples.
        let note = format!("▲ {clipped} samples above {y_max:.0} µs, drawn at the top edge");
        root.draw(&Text::new(
            note,
            (px.start, py.end + 30),
            (FAMILY, 16).into_font(),
        ))?;
    }
    if prepared.iter().all(|p| p.points.is_empty()) {
        let style = TextStyle::from((FAMILY, 40).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        let centre = ((px.start + px.end) / 2, (py.start + py.end) / 2);
        root.draw(&Text::new("no samples", centre, style))?;
    }
    Ok(())
}

fn encode_png(rgb: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Registers the plot's font with plotters once per process.
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let (path, bytes) = load_font()?;
            // plotters keeps the font for the rest of the process: leak it once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| {
                format!(
                    "{path} is not a TrueType/OpenType font the plot can use: \
                     point ${FONT_ENV} at a .ttf file, or install Debian's fonts-dejavu-core"
                )
            })
        })
        .clone()
}

/// `$PUNKTFUNK_PLOT_FONT` if set, otherwise the first of [`FONT_PATHS`] that can be read.
fn load_font() -> Result<(String, Vec<u8>), String> {
    if let Some(path) = std::env::var_os(FONT_ENV) {
        let shown = Path::new(&path).display().to_string();
        return std::fs::read(&path)
            .map(|b| (shown.clone(), b))
            .map_err(|e| format!("reading the font ${FONT_ENV}={shown}: {e} (unset it to use the system's DejaVu Sans)"));
    }
    FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p.to_string(), b)))
        .ok_or_else(|| {
            format!(
                "no font for the plot's text: none of {} exists; install Debian's \
                 fonts-dejavu-core (`just setup` does), or set ${FONT_ENV} to a .ttf file",
                FONT_PATHS.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoded plot: width, height and RGB bytes.
    fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
        let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        let mut reader = png::Decoder::new(file).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    fn count(rgb: &[u8], c: RGBColor) -> usize {
        rgb.chunks_exact(3)
            .filter(|p| p == &[c.0, c.1, c.2])
            .count()
    }

    /// The PNG signature, and width and height from the IHDR chunk that must follow it.
    fn assert_png_header(bytes: &[u8], (w, h): (u32, u32)) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(
            &bytes[8..16],
            b"\0\0\0\x0dIHDR",
            "IHDR first, 13 bytes long"
        );
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), w);
        assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), h);
    }

    fn synthetic() -> Vec<Series> {
        // Deterministic jitter around 4 ms and 6 ms, with 2 large outliers in the first (fewer
        // than 0.5 %, so they are clipped rather than setting the y range).
        let wave = |i: u64, base: f64, amp: f64| base + amp * ((i as f64) * 0.37).sin();
        let first = (0..600)
            .map(|i| {
                (
                    i,
                    if i % 300 == 7 {
                        90_000.0
                    } else {
                        wave(i, 4_000.0, 800.0)
                    },
                )
            })
            .collect();
        let second = (0..600).map(|i| (i, wave(i, 6_000.0, 1_200.0))).collect();
        vec![
            Series {
                name: "capture→send".into(),
                points: first,
            },
            Series {
                name: "capture→display".into(),
                points: second,
            },
        ]
    }

    #[test]
    fn plot_two_series_writes_png_with_their_colors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("latency.png");
        latency_plot(&synthetic(), "synthetic latency", &out).unwrap();

        let bytes = std::fs::read(&out).unwrap();
        assert_png_header(&bytes, SIZE);
        assert!(
            bytes.len() > 10 * 1024,
            "only {} bytes: was anything drawn?",
            bytes.len()
        );

        let (w, h, rgb) = decode(&out);
        assert_eq!((w, h), SIZE);
        for i in 0..2 {
            let n = count(&rgb, series_color(i));
            // ~10,000 each when drawn; the legend's swatch alone is 80.
            assert!(n > 2_000, "series {i}: only {n} pixels of its color");
        }
        assert_eq!(
            count(&rgb, series_color(2)),
            0,
            "a third color without a third series"
        );
    }

    #[test]
    fn plot_outliers_are_clipped_not_dropped_and_do_not_set_the_range() {
        // One series: flat 1000 µs with 2 huge outliers (below 0.5 %, so p99.5 stays 1000).
        let mut points: Vec<(u64, f64)> = (0..1000).map(|i| (i, 1_000.0)).collect();
        points[500].1 = 1e9;
        points[900].1 = 1e9;
        let series = [Series {
            name: "flat".into(),
            points,
        }];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("clipped.png");
        latency_plot(&series, "outliers", &out).unwrap();
        let (_, h, rgb) = decode(&out);
        let c = series_color(0);
        // The flat line sits at 1000 / 1200 of the axis height: its color must fill a band of
        // rows well below the top, which it could not if the axis ran to 1e9 (line on the
        // x axis). Find the row with the most pixels of the series' color.
        let row_counts: Vec<usize> = rgb
            .chunks_exact(3 * SIZE.0 as usize)
            .map(|row| count(row, c))
            .collect();
        let (best_row, best) = row_counts
            .iter()
            .enumerate()
            .max_by_key(|&(_, n)| *n)
            .unwrap();
        assert!(
            *best > 500,
            "no horizontal line of the series' color (best row has {best})"
        );
        assert!(
            (best_row as u32) < h / 2,
            "the line is at row {best_row} of {h}: outliers flattened the plot"
        );
        // The clipped outliers are drawn as triangles on the top edge, above the line.
        let above: usize = row_counts[..best_row.saturating_sub(10)].iter().sum();
        assert!(
            above > 20,
            "outliers not drawn at the top edge ({above} pixels above the line)"
        );
    }

    #[test]
    fn plot_empty_and_nan_series_still_write_a_valid_png() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("none.png", vec![]),
            (
                "empty.png",
                vec![Series {
                    name: "nothing".into(),
                    points: vec![],
                }],
            ),
            (
                "nan.png",
                vec![Series {
                    name: "nan".into(),
                    points: vec![(0, f64::NAN), (1, f64::INFINITY), (2, f64::NEG_INFINITY)],
                }],
            ),
        ];
        for (file, series) in cases {
            let out = dir.path().join(file);
            latency_plot(&series, "empty", &out).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_png_header(&std::fs::read(&out).unwrap(), SIZE);
            let (w, h, rgb) = decode(&out);
            assert_eq!((w, h), SIZE, "{file}");
            // "no samples" is written in black in the middle of the plot, where nothing else is
            // black (the axes are at its edges, the grid is grey).
            let w = SIZE.0 as usize * 3;
            let middle: usize = rgb
                .chunks_exact(w)
                .skip(300)
                .take(100)
                .map(|row| count(&row[500 * 3..800 * 3], BLACK))
                .sum();
            assert!(
                middle > 100,
                "{file}: no \"no samples\" ({middle} black pixels)"
            );
        }
    }

    #[test]
    fn plot_skips_nan_among_samples() {
        let mut s = synthetic();
        s[0].points[10].1 = f64::NAN;
        s[1].points = vec![(0, f64::NAN)];
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("some-nan.png");
        latency_plot(&s, "nan", &out).unwrap();
        let (_, _, rgb) = decode(&out);
        assert!(count(&rgb, series_color(0)) > 100);
    }

    #[test]
    fn plot_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing-dir").join("x.png");
        let e = latency_plot(&synthetic(), "t", &out).unwrap_err();
        assert!(
            e.contains("missing-dir") && e.contains("directory exist"),
            "{e}"
        );
    }

    #[test]
    fn plot_percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 99.5), None);
        assert_eq!(percentile(&[3.0], 99.5), Some(3.0));
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&v, 99.5), Some(995.0));
        assert_eq!(percentile(&v, 100.0), Some(1000.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
    }
}
