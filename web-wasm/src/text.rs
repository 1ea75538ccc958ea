//! Every string the module renders, in Simplified Chinese and English.
//!
//! The language follows `<html lang>` at each render (`zh…` → Chinese, anything else → English), so
//! a page's own language switch also switches the module.

use protocol::page::{ReadFailure, Refusal};

use crate::state::{Phase, Reason, Snapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// The language of a BCP 47 tag such as `zh-CN` or `en-GB`.
    pub fn from_tag(tag: &str) -> Lang {
        if tag.trim().to_ascii_lowercase().starts_with("zh") {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }
}

/// The status line for a snapshot.
pub fn status(lang: Lang, snapshot: &Snapshot) -> String {
    let name = snapshot
        .view
        .as_ref()
        .map(|view| view.terminal_name.as_str())
        .unwrap_or("");
    match (snapshot.phase, snapshot.reason) {
        (Phase::Connecting, _) if snapshot.reconnecting => pick(
            lang,
            "与服务器的连接已断开，正在重新连接…",
            "Connection to the bank lost — reconnecting…",
        )
        .into(),
        (Phase::Connecting, _) => pick(lang, "正在连接服务器…", "Connecting to the bank…").into(),
        (Phase::Online | Phase::Waiting | Phase::Failed | Phase::Refused, Some(reason)) => {
            reason_text(lang, reason).into()
        }
        (Phase::Online, None) => match lang {
            Lang::Zh => ["读卡终端“", name, "”在线"].concat(),
            Lang::En => ["Card terminal “", name, "” online"].concat(),
        },
        (Phase::Waiting, None) => pick(
            lang,
            "等待刷卡 — 请将卡片放到读卡器上",
            "Waiting for card — tap your card on the reader",
        )
        .into(),
        (Phase::Offline, _) => reason_text(lang, Reason::Refusal(Refusal::AgentOffline)).into(),
        (Phase::Forbidden, _) => {
            reason_text(lang, Reason::Refusal(Refusal::TerminalForbidden)).into()
        }
        (Phase::Consent, _) => pick(
            lang,
            "需要您的许可：是否允许此终端为您读卡？",
            "Your permission is needed: may this terminal read your card?",
        )
        .into(),
        (Phase::Reading, _) => pick(
            lang,
            "正在读卡，请勿移开卡片…",
            "Reading the card — keep it on the reader…",
        )
        .into(),
        (Phase::Filled, _) => pick(
            lang,
            "已读取卡号并提交。如需读取另一张卡，请先移开此卡",
            "Card number read and submitted. Remove the card to read another one",
        )
        .into(),
        (Phase::Failed | Phase::Refused, None) => {
            pick(lang, "无法读卡", "The card could not be read").into()
        }
    }
}

fn reason_text(lang: Lang, reason: Reason) -> &'static str {
    match reason {
        Reason::Refusal(refusal) => match refusal {
            Refusal::NotLoggedIn => pick(lang, "请先登录", "Please sign in first"),
            Refusal::NotPaired => pick(
                lang,
                "此浏览器尚未与读卡终端配对，请在本机的读卡助手中打开配对链接",
                "This browser is not paired with a card terminal — open the pairing link from the card agent on this PC",
            ),
            Refusal::TerminalForbidden => pick(
                lang,
                "管理员已关闭此终端的读卡权限",
                "Card reading is switched off for this terminal by the administrator",
            ),
            Refusal::ConsentDenied => pick(
                lang,
                "您已拒绝此终端读卡，本次不会读卡",
                "You declined card reading on this terminal; no card will be read",
            ),
            Refusal::ConsentRequired => pick(
                lang,
                "请先允许此终端读卡",
                "Please allow this terminal to read cards first",
            ),
            Refusal::AgentOffline => pick(
                lang,
                "读卡终端离线 — 请确认本机的读卡助手正在运行",
                "Card terminal offline — check that the card agent is running on this PC",
            ),
            Refusal::TerminalRevoked => pick(
                lang,
                "此读卡终端已被管理员注销",
                "This card terminal was revoked by the administrator",
            ),
            Refusal::NotADemoTerminal => pick(
                lang,
                "演示卡仅适用于使用虚拟读卡器的终端",
                "Demo cards work only on terminals with the virtual reader",
            ),
            Refusal::BadRequest => pick(
                lang,
                "服务器无法处理该请求",
                "The bank could not process that request",
            ),
            Refusal::TooManyRequests => pick(
                lang,
                "操作过于频繁 — 请稍候再试",
                "Too many attempts in a short time — please wait a moment",
            ),
            Refusal::Unavailable => pick(
                lang,
                "服务暂时不可用 — 请稍后再试",
                "The service is temporarily unavailable — please try again shortly",
            ),
        },
        Reason::Failure(failure) => match failure {
            ReadFailure::CardRemoved => pick(lang, "卡片已移开 — 请重新刷卡", "Card removed — tap again"),
            // A card that gives no usable number (none at all, or one that is not a card number):
            // the person can still type it. The technical reason is in the admin's audit log.
            ReadFailure::UnsupportedCard => pick(
                lang,
                "无法读取此卡 — 请换一张卡或手动输入卡号",
                "This card could not be read — try another card or type the number",
            ),
            ReadFailure::Timeout => pick(
                lang,
                "读卡终端未及时响应 — 请移开卡片后重新刷卡",
                "The card terminal did not answer in time — remove the card and tap again",
            ),
            ReadFailure::ReaderError => pick(
                lang,
                "读卡器出错 — 请移开卡片后重新刷卡",
                "The card reader failed — remove the card and tap again",
            ),
            ReadFailure::PolicyRefused => pick(
                lang,
                "此终端的本地策略拒绝了本次读卡",
                "The terminal's local policy refused this read",
            ),
        },
    }
}

pub fn consent_question(lang: Lang, terminal_name: &str) -> String {
    match lang {
        Lang::Zh => ["是否允许读卡终端“", terminal_name, "”为您读取卡号？"].concat(),
        Lang::En => [
            "Allow card terminal “",
            terminal_name,
            "” to read your card number?",
        ]
        .concat(),
    }
}

pub fn allow_once(lang: Lang) -> &'static str {
    pick(lang, "仅本次允许", "Allow once")
}

pub fn allow_always(lang: Lang) -> &'static str {
    pick(lang, "始终允许", "Always allow")
}

pub fn deny(lang: Lang) -> &'static str {
    pick(lang, "拒绝", "Deny")
}

pub fn consent_label(lang: Lang) -> &'static str {
    pick(lang, "读卡许可", "Card reading permission")
}

pub fn demo_title(lang: Lang) -> &'static str {
    pick(
        lang,
        "演示卡（模拟卡片，仅用于虚拟读卡器，非真实银行卡）",
        "Demo cards (simulated, for the virtual reader only — not real cards)",
    )
}

pub fn demo_card(lang: Lang, card: &str) -> String {
    match lang {
        Lang::Zh => ["演示卡：", card].concat(),
        Lang::En => ["Demo card: ", card].concat(),
    }
}

pub fn demo_remove(lang: Lang) -> &'static str {
    pick(lang, "移开卡片", "Remove card")
}

fn pick(lang: Lang, zh: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Zh => zh,
        Lang::En => en,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(phase: Phase, reason: Option<Reason>) -> Snapshot {
        Snapshot {
            phase,
            reason,
            reconnecting: false,
            view: None,
            consent_question: None,
            demo_cards: None,
            read_id: None,
        }
    }

    #[test]
    fn language_follows_the_html_lang_tag() {
        assert_eq!(Lang::from_tag("zh-CN"), Lang::Zh);
        assert_eq!(Lang::from_tag("zh-Hans"), Lang::Zh);
        assert_eq!(Lang::from_tag("ZH"), Lang::Zh);
        assert_eq!(Lang::from_tag("en-GB"), Lang::En);
        assert_eq!(Lang::from_tag(""), Lang::En);
    }

    #[test]
    fn card_removed_says_tap_again_in_both_languages() {
        let waiting = snapshot(
            Phase::Waiting,
            Some(Reason::Failure(ReadFailure::CardRemoved)),
        );

        assert_eq!(status(Lang::En, &waiting), "Card removed — tap again");
        assert_eq!(status(Lang::Zh, &waiting), "卡片已移开 — 请重新刷卡");
    }

    #[test]
    fn a_card_without_a_usable_number_suggests_another_card_or_typing() {
        let failed = snapshot(
            Phase::Failed,
            Some(Reason::Failure(ReadFailure::UnsupportedCard)),
        );

        assert_eq!(
            status(Lang::En, &failed),
            "This card could not be read — try another card or type the number"
        );
        assert_eq!(
            status(Lang::Zh, &failed),
            "无法读取此卡 — 请换一张卡或手动输入卡号"
        );
    }

    #[test]
    fn every_phase_has_text_in_both_languages() {
        for phase in [
            Phase::Connecting,
            Phase::Online,
            Phase::Offline,
            Phase::Forbidden,
            Phase::Consent,
            Phase::Waiting,
            Phase::Reading,
            Phase::Refused,
            Phase::Failed,
            Phase::Filled,
        ] {
            let snap = snapshot(phase, None);
            assert!(!status(Lang::En, &snap).is_empty());
            assert_ne!(status(Lang::En, &snap), status(Lang::Zh, &snap));
        }
    }
}
