//! Policy-routing rules (`ip rule`): which routing table a packet is looked up in
//! before the main table. strait has one kind: "packets without strait's mark look up
//! table T first" (`ip rule add not fwmark M/M lookup T priority P`), which steers a
//! node's traffic to encrypted peers into the IPsec datapath while the datapath's own
//! ESP packets, which carry the mark, take the main table to the underlay.
//!
//! A rule has no protocol tag to find it by; strait's is known by its exact priority,
//! table and mark, so [`Netlink::rules`] lists everything and the caller picks.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use strait_api::Family;

use super::{Netlink, NetlinkError};

/// `[not] fwmark MARK/MASK lookup TABLE priority PRIORITY`, for one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    pub family: Family,
    pub priority: u32,
    pub table: u32,
    /// `(mark, mask)`; `None` matches every packet.
    pub fwmark: Option<(u32, u32)>,
    /// Match the packets the mark does not (`not fwmark`).
    pub invert: bool,
}

impl Rule {
    fn to_message(self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = match self.family {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        };
        m.header.action = RuleAction::ToTable;
        // Tables above 255 only fit the attribute; the header's byte says "see it".
        m.header.table = 0;
        if self.invert {
            m.header.flags |= RuleFlags::Invert;
        }
        m.attributes.push(RuleAttribute::Table(self.table));
        m.attributes.push(RuleAttribute::Priority(self.priority));
        if let Some((mark, mask)) = self.fwmark {
            m.attributes.push(RuleAttribute::FwMark(mark));
            m.attributes.push(RuleAttribute::FwMask(mask));
        }
        m
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} rule priority {}", self.family, self.priority)?;
        if let Some((mark, mask)) = self.fwmark {
            let not = if self.invert { "not " } else { "" };
            write!(f, " {not}fwmark {mark:#x}/{mask:#x}")?;
        }
        write!(f, " lookup {}", self.table)
    }
}

impl Netlink {
    /// Adds `rule`; EEXIST when the same rule exists.
    pub async fn add_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        self.ack(
            "add rule",
            rule,
            RouteNetlinkMessage::NewRule(rule.to_message()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
    }

    /// Deletes `rule`; ENOENT when there is none.
    pub async fn del_rule(&self, rule: &Rule) -> Result<(), NetlinkError> {
        self.ack(
            "delete rule",
            rule,
            RouteNetlinkMessage::DelRule(rule.to_message()),
            0,
        )
        .await
    }

    /// Every table lookup rule of both families (`ip rule` and `ip -6 rule`), in the
    /// kernel's order.
    pub async fn rules(&self) -> Result<Vec<Rule>, NetlinkError> {
        let mut out = vec![];
        for (family, af) in [
            (Family::V4, AddressFamily::Inet),
            (Family::V6, AddressFamily::Inet6),
        ] {
            let mut query = RuleMessage::default();
            query.header.family = af;
            let messages = self
                .collect(
                    "list rules",
                    family,
                    RouteNetlinkMessage::GetRule(query),
                    true,
                )
                .await?;
            out.extend(messages.into_iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => parse_rule(family, r),
                _ => None,
            }));
        }
        Ok(out)
    }
}

fn parse_rule(family: Family, m: RuleMessage) -> Option<Rule> {
    if m.header.action != RuleAction::ToTable {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut priority = 0;
    let (mut mark, mut mask) = (None, None);
    for a in m.attributes {
        match a {
            RuleAttribute::Table(t) => table = t,
            RuleAttribute::Priority(p) => priority = p,
            RuleAttribute::FwMark(v) => mark = Some(v),
            RuleAttribute::FwMask(v) => mask = Some(v),
            _ => {}
        }
    }
    Some(Rule {
        family,
        priority,
        table,
        fwmark: mark.map(|m| (m, mask.unwrap_or(u32::MAX))),
        invert: m.header.flags.contains(RuleFlags::Invert),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inverted_mark_rule_round_trips_through_its_message() {
        let rule = Rule {
            family: Family::V6,
            priority: 2083,
            table: 2083,
            fwmark: Some((0x53_0000, 0xff_0000)),
            invert: true,
        };
        let m = rule.to_message();
        assert!(m.header.flags.contains(RuleFlags::Invert));
        assert_eq!(parse_rule(Family::V6, m), Some(rule));
        assert_eq!(
            rule.to_string(),
            "IPv6 rule priority 2083 not fwmark 0x530000/0xff0000 lookup 2083"
        );
    }
}
