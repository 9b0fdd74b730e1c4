//! `report.html`: one self-contained page per run (no network, no files beside it needed): the
//! results page's Markdown rendered with its tables, then every figure inline as SVG.

use pulldown_cmark::{Options, Parser, html};

use crate::sheet::escape;

/// A figure of the page.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The caption.
    pub caption: String,
    /// The figure's SVG document.
    pub svg: String,
}

/// The page: `markdown` (the run's `results.md`) rendered, then `figures` in order.
pub fn report_html(title: &str, markdown: &str, figures: &[Figure]) -> String {
    let mut body = String::new();
    html::push_html(&mut body, Parser::new_ext(markdown, Options::ENABLE_TABLES));
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>\n\
         body {{ font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; color: #222; }}\n\
         table {{ border-collapse: collapse; margin: 1em 0; }}\n\
         th, td {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }}\n\
         th {{ background: #eee; }}\n\
         figure {{ margin: 2em 0; }}\n\
         figcaption {{ font-weight: bold; margin-bottom: 0.5em; }}\n\
         svg {{ max-width: 100%; height: auto; }}\n\
         </style>\n</head>\n<body>\n",
        escape(title)
    );
    page.push_str(&body);
    for f in figures {
        // The SVG documents start with an XML-less `<svg ...>` root, which HTML takes inline.
        let svg = f.svg.trim_start_matches("<?xml version=\"1.0\" encoding=\"UTF-8\"?>").trim();
        page.push_str(&format!("<figure>\n<figcaption>{}</figcaption>\n{svg}\n</figure>\n", escape(&f.caption)));
    }
    page.push_str("</body>\n</html>\n");
    page
}
