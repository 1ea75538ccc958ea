//! The settlement report for people: CSV (every item, UTF-8 with a byte-order mark so that spreadsheet programs read the Chinese), a real .xlsx (summary, by terminal, by amount, by hour, mismatches, all items; numbers and dates as such, not text) and an SVG bar chart of the amounts by hour, drawn here (no script, no CDN); headers and texts in zh-CN or en

use rust_xlsxwriter::{ExcelDateTime, Format, FormatAlign, Workbook, Worksheet, XlsxError};

use super::report::{Group, Report, Totals};
use super::{Class, Item, Lang};

/// Yuan with two decimals, from fen.
pub fn yuan(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", (minor / 100).abs(), (minor % 100).abs())
}

fn item_headers(lang: Lang) -> [&'static str; 18] {
    [
        lang.pick("营业日", "Business date"),
        lang.pick("版本", "Revision"),
        lang.pick("时间", "Time"),
        lang.pick("类别代码", "Class code"),
        lang.pick("类别", "Class"),
        lang.pick("原因代码", "Reason code"),
        lang.pick("原因", "Reason"),
        lang.pick("处理建议", "Action"),
        lang.pick("充值编号", "Top-up"),
        lang.pick("银行幂等键", "Bank key"),
        lang.pick("终端", "Terminal"),
        lang.pick("卡号", "Card"),
        lang.pick("状态", "State"),
        lang.pick("金额", "Amount"),
        lang.pick("账务扣款", "Ledger debit"),
        lang.pick("银行扣款", "Bank debit"),
        lang.pick("账务退款", "Ledger refund"),
        lang.pick("银行退款", "Bank refund"),
    ]
}

fn csv_field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

fn csv_row<'a>(out: &mut String, fields: impl IntoIterator<Item = &'a str>) {
    for (i, f) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(out, f);
    }
    out.push_str("\r\n");
}

/// Every item of the revision, one row each (RFC 4180, CRLF), after a header row.
pub fn csv(report: &Report, lang: Lang) -> String {
    let h = report.header();
    let mut out = String::from('\u{feff}');
    csv_row(&mut out, item_headers(lang));
    for i in report.items() {
        let revision = h.revision.to_string();
        let at = report.calendar.local_text(i.at_ms);
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let money = [i.amount_minor, i.ledger_debit_minor, i.bank_debit_minor, i.ledger_refund_minor, i.bank_refund_minor].map(yuan);
        let (topup, key, terminal, card, state) = (opt(&i.topup_id), opt(&i.bank_key), opt(&i.terminal_id), opt(&i.card_masked), opt(&i.state));
        csv_row(
            &mut out,
            [
                h.business_date.as_str(),
                &revision,
                &at,
                i.class().code(),
                i.class().label(lang),
                i.reason.code(),
                i.reason.text(lang),
                i.reason.action(lang),
                &topup,
                &key,
                &terminal,
                &card,
                &state,
            ]
            .into_iter()
            .chain(money.iter().map(String::as_str)),
        );
    }
    out
}

struct Formats {
    header: Format,
    money: Format,
    datetime: Format,
    date: Format,
}

fn excel_time(report: &Report, ms: i64) -> Result<ExcelDateTime, XlsxError> {
    let (y, mo, d, h, mi, s) = report.calendar.local_parts(ms);
    let year = u16::try_from(y).unwrap_or(1900);
    ExcelDateTime::from_ymd(year, mo as u8, d as u8)?.and_hms(h as u16, mi as u8, s)
}

fn write_headers(sheet: &mut Worksheet, f: &Formats, headers: &[&str]) -> Result<(), XlsxError> {
    for (col, text) in headers.iter().enumerate() {
        sheet.write_string_with_format(0, col as u16, *text, &f.header)?;
        sheet.set_column_width(col as u16, 14)?;
    }
    sheet.set_freeze_panes(1, 0)?;
    Ok(())
}

fn money(sheet: &mut Worksheet, f: &Formats, row: u32, col: u16, minor: i64) -> Result<(), XlsxError> {
    sheet.write_number_with_format(row, col, minor as f64 / 100.0, &f.money)?;
    Ok(())
}

fn group_headers(lang: Lang, first: &'static str) -> [&'static str; 5] {
    [first, lang.pick("笔数", "Top-ups"), lang.pick("成功笔数", "Completed"), lang.pick("成功金额", "Completed amount"), lang.pick("差异笔数", "Mismatches")]
}

fn write_group_totals(sheet: &mut Worksheet, f: &Formats, row: u32, t: &Totals) -> Result<(), XlsxError> {
    sheet.write_number(row, 1, t.n_topups as f64)?;
    sheet.write_number(row, 2, t.n_completed as f64)?;
    money(sheet, f, row, 3, t.completed_minor)?;
    sheet.write_number(row, 4, t.mismatches() as f64)?;
    Ok(())
}

fn write_items<'a>(sheet: &mut Worksheet, f: &Formats, report: &Report, lang: Lang, items: impl Iterator<Item = &'a Item>) -> Result<(), XlsxError> {
    let headers = item_headers(lang);
    // No business date or revision column: the sheet is of one revision.
    write_headers(sheet, f, &headers[2..])?;
    sheet.set_column_width(0, 20)?;
    for col in [4u16, 5] {
        sheet.set_column_width(col, 48)?;
    }
    for (n, i) in items.enumerate() {
        let row = n as u32 + 1;
        sheet.write_datetime_with_format(row, 0, &excel_time(report, i.at_ms)?, &f.datetime)?;
        let texts = [i.class().code(), i.class().label(lang), i.reason.code(), i.reason.text(lang), i.reason.action(lang)];
        for (col, text) in texts.iter().enumerate() {
            sheet.write_string(row, col as u16 + 1, *text)?;
        }
        for (col, v) in [&i.topup_id, &i.bank_key, &i.terminal_id, &i.card_masked, &i.state].iter().enumerate() {
            if let Some(v) = v {
                sheet.write_string(row, col as u16 + 6, v.as_str())?;
            }
        }
        for (col, minor) in [i.amount_minor, i.ledger_debit_minor, i.bank_debit_minor, i.ledger_refund_minor, i.bank_refund_minor].into_iter().enumerate() {
            money(sheet, f, row, col as u16 + 11, minor)?;
        }
    }
    Ok(())
}

/// The report as an .xlsx workbook.
pub fn xlsx(report: &Report, lang: Lang) -> Result<Vec<u8>, XlsxError> {
    let f = Formats {
        header: Format::new().set_bold().set_align(FormatAlign::Center).set_background_color(0xDDEBF7),
        money: Format::new().set_num_format("#,##0.00"),
        datetime: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        date: Format::new().set_num_format("yyyy-mm-dd"),
    };
    let h = report.header();
    let totals = report.totals();
    let mut book = Workbook::new();

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("汇总", "Summary"))?;
    write_headers(sheet, &f, &[lang.pick("项目", "Item"), lang.pick("数值", "Value")])?;
    sheet.set_column_width(0, 28)?;
    sheet.set_column_width(1, 24)?;
    let mut row = 1;
    let mut label = |sheet: &mut Worksheet, text: &str| -> Result<u32, XlsxError> {
        sheet.write_string(row, 0, text)?;
        row += 1;
        Ok(row - 1)
    };
    let r = label(sheet, lang.pick("营业日", "Business date"))?;
    let date = chrono_date(&h.business_date);
    match date {
        Some((y, m, d)) => sheet.write_datetime_with_format(r, 1, &ExcelDateTime::from_ymd(y, m, d)?, &f.date)?,
        None => sheet.write_string(r, 1, h.business_date.as_str())?,
    };
    let r = label(sheet, lang.pick("版本", "Revision"))?;
    sheet.write_number(r, 1, h.revision)?;
    let r = label(sheet, lang.pick("时区", "Time zone"))?;
    sheet.write_string(r, 1, h.time_zone.as_str())?;
    let r = label(sheet, lang.pick("日切时间", "Cut-off"))?;
    sheet.write_string(r, 1, h.cutoff.as_str())?;
    for (text, ms) in [
        (lang.pick("起始时间", "Day starts"), h.window.start_ms),
        (lang.pick("截止时间", "Day ends"), h.window.end_ms),
        (lang.pick("生成时间", "Settled at"), h.created_at),
    ] {
        let r = label(sheet, text)?;
        sheet.write_datetime_with_format(r, 1, &excel_time(report, ms)?, &f.datetime)?;
    }
    let r = label(sheet, lang.pick("生成者", "Settled by"))?;
    sheet.write_string(r, 1, h.created_by.as_str())?;
    let r = label(sheet, lang.pick("币种", "Currency"))?;
    sheet.write_string(r, 1, h.currency.as_str())?;
    for (text, n) in [(lang.pick("充值笔数", "Top-ups"), totals.n_topups), (lang.pick("成功笔数", "Completed"), totals.n_completed)] {
        let r = label(sheet, text)?;
        sheet.write_number(r, 1, n as f64)?;
    }
    for (text, minor) in [
        (lang.pick("成功金额", "Completed amount"), totals.completed_minor),
        (lang.pick("账务扣款合计", "Ledger debits"), totals.ledger_debit_minor),
        (lang.pick("银行扣款合计", "Bank debits"), totals.bank_debit_minor),
        (lang.pick("账务退款合计", "Ledger refunds"), totals.ledger_refund_minor),
        (lang.pick("银行退款合计", "Bank refunds"), totals.bank_refund_minor),
    ] {
        let r = label(sheet, text)?;
        money(sheet, &f, r, 1, minor)?;
    }
    for class in Class::ALL {
        let r = label(sheet, class.label(lang))?;
        sheet.write_number(r, 1, totals.count(class) as f64)?;
    }
    let r = label(sheet, lang.pick("差异合计", "Mismatches"))?;
    sheet.write_number(r, 1, totals.mismatches() as f64)?;

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("按终端", "By terminal"))?;
    write_headers(sheet, &f, &group_headers(lang, lang.pick("终端", "Terminal")))?;
    for (n, g) in report.by_terminal().iter().enumerate() {
        let row = n as u32 + 1;
        sheet.write_string(row, 0, g.key.as_deref().unwrap_or("-"))?;
        write_group_totals(sheet, &f, row, &g.totals)?;
    }

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("按金额", "By amount"))?;
    write_headers(sheet, &f, &group_headers(lang, lang.pick("金额", "Amount")))?;
    for (n, g) in report.by_amount().iter().enumerate() {
        let row = n as u32 + 1;
        money(sheet, &f, row, 0, g.key)?;
        write_group_totals(sheet, &f, row, &g.totals)?;
    }

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("按时段", "By hour"))?;
    write_headers(sheet, &f, &group_headers(lang, lang.pick("时段", "Hour")))?;
    for (n, g) in report.by_hour().iter().enumerate() {
        let row = n as u32 + 1;
        sheet.write_string(row, 0, hour_label(g))?;
        write_group_totals(sheet, &f, row, &g.totals)?;
    }

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("差异明细", "Mismatches"))?;
    write_items(sheet, &f, report, lang, report.mismatches())?;

    let sheet = book.add_worksheet();
    sheet.set_name(lang.pick("全部明细", "All items"))?;
    write_items(sheet, &f, report, lang, report.items().iter())?;

    book.save_to_buffer()
}

fn chrono_date(text: &str) -> Option<(u16, u8, u8)> {
    let date = super::BusinessDate::parse(text).ok()?;
    let s = date.to_string();
    Some((s[0..4].parse().ok()?, s[5..7].parse().ok()?, s[8..10].parse().ok()?))
}

fn hour_label(g: &Group<u32>) -> String {
    format!("{:02}:00-{:02}:00", g.key, g.key + 1)
}

fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The smallest 1, 2 or 5 × 10ⁿ yuan at or above `minor` (at least ¥1), as fen.
fn nice_ceiling(minor: i64) -> i64 {
    let mut step = 100;
    loop {
        for m in [1, 2, 5] {
            if step * m >= minor {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// A bar chart of the completed amounts by local hour, in the business day's order.
pub fn svg(report: &Report, lang: Lang) -> String {
    const W: i64 = 820;
    const H: i64 = 380;
    const LEFT: i64 = 80;
    const RIGHT: i64 = 20;
    const TOP: i64 = 50;
    const BOTTOM: i64 = 60;
    let hours = report.by_hour();
    let max = nice_ceiling(hours.iter().map(|g| g.totals.completed_minor).max().unwrap_or(0));
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let slot = plot_w / hours.len().max(1) as i64;
    let h = report.header();
    let title = match lang {
        Lang::ZhCn => format!("{} 按时段充值金额（{}，第 {} 版）", h.business_date, h.currency, h.revision),
        Lang::En => format!("Top-up amounts by hour, {} ({}, revision {})", h.business_date, h.currency, h.revision),
    };
    let mut out = String::new();
    out.push_str(&format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" font-family=\"sans-serif\" font-size=\"11\">\n<title>{t}</title>\n<rect width=\"{W}\" height=\"{H}\" fill=\"#ffffff\"/>\n<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{t}</text>\n",
        W / 2,
        t = escape_xml(&title)
    ));
    for i in 0..=4 {
        let v = max * i / 4;
        let y = TOP + plot_h - plot_h * i / 4;
        out.push_str(&format!(
            "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#dddddd\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            W - RIGHT,
            LEFT - 6,
            y + 4,
            yuan(v)
        ));
    }
    for (n, g) in hours.iter().enumerate() {
        let x = LEFT + slot * n as i64;
        let bar_h = if max > 0 { plot_h * g.totals.completed_minor / max } else { 0 };
        let label = format!("{} {}: {} ({})", hour_label(g), h.currency, yuan(g.totals.completed_minor), g.totals.n_completed);
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bar_h}\" fill=\"#2f6db5\"><title>{}</title></rect>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:02}</text>\n",
            x + 3,
            TOP + plot_h - bar_h,
            slot - 6,
            escape_xml(&label),
            x + slot / 2,
            TOP + plot_h + 16,
            g.key
        ));
    }
    out.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#333333\"/>\n<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n</svg>\n",
        W - RIGHT,
        LEFT + plot_w / 2,
        H - 14,
        escape_xml(&match lang {
            Lang::ZhCn => format!("时段（当地时间，{}）", h.time_zone),
            Lang::En => format!("Hour, local time ({})", h.time_zone),
        }),
        TOP + plot_h / 2,
        TOP + plot_h / 2,
        escape_xml(&format!("{} ({})", lang.pick("成功金额", "Completed amount"), h.currency)),
        y = TOP + plot_h
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_print_as_yuan_and_axes_round_up() {
        assert_eq!(yuan(5_000), "50.00");
        assert_eq!(yuan(7), "0.07");
        assert_eq!(yuan(123_456), "1234.56");
        assert_eq!(nice_ceiling(0), 100);
        assert_eq!(nice_ceiling(12_000), 20_000);
        assert_eq!(nice_ceiling(50_000), 50_000);
        assert_eq!(nice_ceiling(50_001), 100_000);
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        let mut out = String::new();
        csv_row(&mut out, ["a", "b,c", "say \"hi\"", "x\ny"]);
        assert_eq!(out, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
        assert_eq!(escape_xml("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
