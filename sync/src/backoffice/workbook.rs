//! `GET /lines/export.xlsx`: the lines export as an Excel workbook, the
//! form for spreadsheets. Cells are typed (see [`crate::spreadsheet`]): an
//! account keeps its leading zero and is never run as a formula, counts
//! are numbers, times are dates in the back office's offset and the
//! low-trust mark a yes/no.
//!
//! A workbook is a zip archive whose index comes last, so it cannot be sent
//! while it is read from the database as the CSV export is: the lines are
//! read page by page (the CSV export's pages and limit) into a sheet that
//! keeps only the row being written in memory, the workbook goes to an
//! anonymous temporary file, and that file is sent. A failure on the way
//! is an error page, never half a file.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use rust_xlsxwriter::{DocProperties, Workbook, XlsxError};
use tokio::sync::mpsc;

use super::auth::Viewer;
use super::layout;
use super::lines::{
    EXPORT_HEADER, LinesQuery, Page, audit_export, cut_note, export_file_name, export_filter,
};
use super::query::PageQuery;
use super::{BackofficeState, header_value};
use crate::spreadsheet::{XLSX_MAX_ROWS, XlsxFormats};

const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// `GET /lines/export.xlsx`: every line the filters select, up to
/// `export_max_rows` and what a sheet holds; written to the audit log.
pub(super) async fn export_xlsx(
    State(state): State<BackofficeState>,
    Extension(viewer): Extension<Viewer>,
    method: Method,
    PageQuery(query): PageQuery<LinesQuery>,
) -> Response {
    // The header row and a row saying the export was cut take two rows.
    let max = state.config().export_max_rows.min(XLSX_MAX_ROWS - 2);
    let mut export = match export_filter(&state, &viewer, &query, max) {
        Ok(export) => export,
        Err(refused) => return *refused,
    };
    if method == Method::HEAD {
        return (
            [(header::CONTENT_TYPE, header_value(CONTENT_TYPE))],
            Body::empty(),
        )
            .into_response();
    }
    audit_export(&state, &viewer, "export_xlsx", &query, max).await;
    // Pages go to the writer, on a blocking thread, two at most waiting.
    let (pages, received) = mpsc::channel(2);
    let writer = tokio::task::spawn_blocking(move || write_workbook(received, max));
    let read = async {
        loop {
            let page = export.next_page().await?;
            let last = !matches!(page, Page::Rows(_));
            // A writer gone (failed) says why below.
            if pages.send(page).await.is_err() || last {
                return Ok::<(), crate::Error>(());
            }
        }
    };
    let read = read.await;
    drop(pages);
    let written = writer.await;
    let file = match (read, written) {
        (Ok(()), Ok(Ok(file))) => file,
        (Err(e), _) => return failed(&viewer, &e),
        (_, Ok(Err(e))) => return failed(&viewer, &e),
        (_, Err(e)) => return failed(&viewer, &e),
    };
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    (
        [
            (header::CONTENT_TYPE, header_value(CONTENT_TYPE)),
            (
                header::CONTENT_DISPOSITION,
                header_value(&export_file_name(&state, "xlsx")),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

fn failed(viewer: &Viewer, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "Excel export failed");
    layout::error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        Some(viewer),
        "Export failed",
        "The Excel export could not be made (the server's log says why); try again, or export CSV.",
    )
}

/// Why the workbook could not be made.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("cannot write the workbook: {0}")]
    Xlsx(#[from] XlsxError),
    #[error("cannot use a temporary file for the workbook: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the pages received into a workbook of one sheet, `lines`, in an
/// anonymous temporary file; returns the file, read from its start.
fn write_workbook(mut pages: mpsc::Receiver<Page>, max: u32) -> Result<std::fs::File, WriteError> {
    use std::io::Seek as _;
    let mut book = Workbook::new();
    book.set_properties(&DocProperties::new().set_title("LineProbe lines"));
    let formats = XlsxFormats::default();
    let sheet = book.add_worksheet_with_constant_memory()?;
    sheet.set_name("lines")?;
    // A sheet that keeps no rows cannot fit its columns to them afterwards.
    for (c, name) in (0_u16..).zip(EXPORT_HEADER) {
        sheet.set_column_width(c, column_width(name))?;
    }
    formats.header(sheet, &EXPORT_HEADER)?;
    let mut row = 1_u32;
    while let Some(page) = pages.blocking_recv() {
        match page {
            Page::Rows(rows) => {
                for cells in rows {
                    formats.row(sheet, row, &cells)?;
                    row += 1;
                }
            }
            Page::Cut => {
                sheet.write_string(row, 0, cut_note(max))?;
                break;
            }
            Page::End => break,
        }
    }
    let mut file = tempfile::tempfile()?;
    book.save_to_writer(&mut file)?;
    file.rewind()?;
    Ok(file)
}

/// A column's width, in characters, by what it holds.
fn column_width(name: &str) -> f64 {
    match name {
        "line" | "install_id" => 40.0,
        "reasons" | "filled" => 30.0,
        "first_seen" | "last_seen" => 20.0,
        "account" | "first_hop_ip" | "egress_ip" => 18.0,
        "verdict" => 16.0,
        _ if name.ends_with("_name") => 12.0,
        _ => 10.0,
    }
}
