"""Merchant bills built exactly in the layouts the providers publish, for the statement tests.

WeChat Pay trade bill (交易账单), bill types ALL, SUCCESS and REFUND. Layouts from WeChat Pay's own
交易账单详细说明 (https://pay.weixin.qq.com/docs/merchant/products/bill-download/format-trade.html: the
three detail headers and their summary headers below, every value preceded by a backtick) and the v2
/pay/downloadbill and v3 /v3/bill/tradebill docs (same text; `tar_type=GZIP` gives it gzipped), as
parsed by the open-source WxJava SDK (binarywang, `WxPayBillResult.fromRawBillResultString(…, billType)`:
ALL 27 columns, SUCCESS 20, REFUND with 退款申请时间/退款成功时间).

Alipay 业务明细 (the trade bill of alipay.data.dataservice.bill.downloadurl.query, bill_type=trade): a
zip of GBK CSVs named `<pid>0156_<date>_业务明细.csv` and `…_业务明细(汇总).csv`; the detail CSV has `#`
comment lines, the header row below (25 columns as open-source parsers of the file read them, e.g. the
`支付宝交易号,商户订单号,业务类型,…,退款批次号/请求号,服务费（元）,分润（元）,备注` header they check
line by line), values padded with a tab, refunds negative, then `#…业务明细列表结束…` and the totals.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from decimal import Decimal

WX_COLUMNS = {
    "ALL": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",
    "SUCCESS": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,商品名称,商户数据包,手续费,费率,订单金额,费率备注",
    "REFUND": "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,"
    "付款银行,货币种类,应结订单金额,代金券金额,退款申请时间,退款成功时间,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注",
}
WX_SUMMARY = {
    "ALL": "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
    "SUCCESS": "总交易单数,应结订单总金额,手续费总金额,订单总金额",
    "REFUND": "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
}
WX_SUMS = {
    "应结订单总金额": "应结订单金额",
    "退款总金额": "退款金额",
    "充值券退款总金额": "充值券退款金额",
    "手续费总金额": "手续费",
    "订单总金额": "订单金额",
    "申请退款总金额": "申请退款金额",
}


def yuan(fen: int) -> str:
    sign = "-" if fen < 0 else ""
    return f"{sign}{abs(fen) // 100}.{abs(fen) % 100:02d}"


class WxBill:
    """One day's WeChat Pay trade bill of one type."""

    def __init__(self, kind: str = "ALL", day: str = "2026-12-05") -> None:
        self.kind, self.day = kind, day
        self.columns = WX_COLUMNS[kind].split(",")
        self.rows: list[dict[str, str]] = []

    def _base(self, order_id: str, at: str, product: str) -> dict[str, str]:
        n = len(self.rows)
        return {
            "交易时间": f"{self.day} {at}",
            "公众账号ID": "wx2421b1c4370ec43b",
            "商户号": "1900000109",
            "特约商户号": "0",
            "设备号": "POS-01",
            "微信订单号": f"42000{zlib.crc32(order_id.encode()):018d}{n:05d}",
            "商户订单号": order_id,
            "用户标识": f"oUpF8uMuAJO_M2pxb1Q9zNjWeS{n:02d}",
            "交易类型": "MICROPAY",
            "付款银行": "CMB_DEBIT",
            "货币种类": "CNY",
            "代金券金额": "0.00",
            "充值券退款金额": "0.00",
            "商品名称": product,
            "商户数据包": "",
            "费率": "0.60%",
            "费率备注": "",
        }

    def pay(
        self,
        order_id: str,
        fen: int,
        at: str = "12:30:00",
        product: str = "巴马香米 5kg",
        txn: str | None = None,
    ) -> WxBill:
        row = self._base(order_id, at, product)
        if txn:
            row["微信订单号"] = txn
        row.update(
            {
                "交易状态": "SUCCESS",
                "应结订单金额": yuan(fen),
                "微信退款单号": "0",
                "商户退款单号": "0",
                "退款金额": "0.00",
                "退款类型": "",
                "退款状态": "",
                "手续费": f"{Decimal(fen) * Decimal('0.00006'):.5f}",
                "订单金额": yuan(fen),
                "申请退款金额": "0.00",
            }
        )
        self.rows.append(row)
        return self

    def refund(
        self,
        order_id: str,
        fen: int,
        at: str = "18:00:00",
        refund_id: str | None = None,
        product: str = "巴马香米 5kg",
        state: str = "REFUND",
        fee: str | None = None,
    ) -> WxBill:
        row = self._base(order_id, at, product)
        rid = refund_id or f"50300{len(self.rows):024d}{zlib.crc32(order_id.encode()) % 1000:03d}"
        row.update(
            {
                "交易状态": state,
                "应结订单金额": "0.00",
                "退款申请时间": f"{self.day} {at}",
                "退款成功时间": f"{self.day} {at}",
                "微信退款单号": rid,
                "商户退款单号": f"R{order_id}",
                "退款金额": yuan(fen),
                "退款类型": "ORIGINAL",
                "退款状态": "SUCCESS",
                "手续费": fee or f"-{Decimal(fen) * Decimal('0.00006'):.5f}",
                "订单金额": "0.00",
                "申请退款金额": yuan(fen),
            }
        )
        self.rows.append(row)
        return self

    def text(self) -> str:
        lines = [",".join(self.columns)]
        lines += [",".join("`" + row.get(c, "") for c in self.columns) for row in self.rows]
        summary = WX_SUMMARY[self.kind].split(",")
        values = []
        for name in summary:
            if name == "总交易单数":
                values.append(str(len(self.rows)))
            elif name == "手续费总金额":
                values.append(f"{sum(Decimal(r['手续费']) for r in self.rows):.5f}")
            else:
                total = sum(Decimal(r.get(WX_SUMS[name], "0") or "0") for r in self.rows)
                values.append(f"{total:.2f}")
        lines += [",".join(summary), ",".join("`" + v for v in values)]
        return "\r\n".join(lines) + "\r\n"

    def bytes(self, encoding: str = "utf-8", bom: bool = False, gz: bool = False) -> bytes:
        data = ("\ufeff" if bom else "").encode(encoding) + self.text().encode(encoding)
        return gzip.compress(data) if gz else data


AP_COLUMNS = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,终端号,对方账户,"
    "订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,商家优惠（元）,券核销金额（元）,"
    "券名称,商家红包消费金额（元）,卡消费金额（元）,退款批次号/请求号,服务费（元）,分润（元）,备注"
).split(",")
AP_PID = "20881234567890120156"


def _ap_field(value: str) -> str:
    # Every value is followed by a tab; one holding a comma or a quote is quoted as CSV quotes it.
    text = f"{value}\t"
    return '"' + text.replace('"', '""') + '"' if any(c in value for c in ',"') else text


class AlipayBill:
    """One Alipay 业务明细 bill (a day's, or a month's)."""

    def __init__(self, day: str = "2026-12-05") -> None:
        self.day = day
        self.rows: list[dict[str, str]] = []

    def pay(self, order_id: str, fen: int, at: str = "12:30:00", product: str = "巴马香米 5kg") -> AlipayBill:
        n = len(self.rows)
        self.rows.append(
            {
                "支付宝交易号": f"{self.day.replace('-', '')}2200140466{n:010d}",
                "商户订单号": order_id,
                "业务类型": "交易",
                "商品名称": product,
                "创建时间": f"{self.day} {at}",
                "完成时间": f"{self.day} {at}",
                "门店编号": "BM001",
                "门店名称": "巴马特产店",
                "对方账户": "138****0000",
                "订单金额（元）": yuan(fen),
                "商家实收（元）": yuan(fen),
                "服务费（元）": yuan(-(fen * 6 // 1000)),
            }
        )
        return self

    def refund(
        self, order_id: str, trade_no: str, paid_fen: int, fen: int, at: str = "18:00:00"
    ) -> AlipayBill:
        self.rows.append(
            {
                "支付宝交易号": trade_no,
                "商户订单号": order_id,
                "业务类型": "退款",
                "商品名称": "巴马香米 5kg",
                "创建时间": f"{self.day} {at}",
                "完成时间": f"{self.day} {at}",
                "门店编号": "BM001",
                "门店名称": "巴马特产店",
                "对方账户": "138****0000",
                "订单金额（元）": yuan(paid_fen),
                "商家实收（元）": yuan(-fen),
                "退款批次号/请求号": f"RF{order_id}{len(self.rows)}",
                "服务费（元）": yuan(fen * 6 // 1000),
            }
        )
        return self

    def trade_no(self, order_id: str) -> str:
        return next(
            r["支付宝交易号"] for r in self.rows if r["商户订单号"] == order_id and r["业务类型"] == "交易"
        )

    def text(self) -> str:
        compact = self.day.replace("-", "")
        lines = [
            "#支付宝业务明细查询",
            f"#账号：[{AP_PID}]",
            f"#起始日期：[{compact[:4]}年{compact[4:6]}月{compact[6:]}日 00:00:00]   终止日期：[{compact[:4]}年"
            f"{compact[4:6]}月{compact[6:]}日 23:59:59]",
            "#-----------------------------------------业务明细列表----------------------------------------",
            ",".join(AP_COLUMNS),
        ]
        zero = {c: "0.00" for c in AP_COLUMNS if c.endswith("（元）")}
        for row in self.rows:
            full = {**{c: "" for c in AP_COLUMNS}, **zero, **row}
            lines.append(",".join(_ap_field(full[c]) for c in AP_COLUMNS))
        trades = [r for r in self.rows if r["业务类型"] == "交易"]
        refunds = [r for r in self.rows if r["业务类型"] == "退款"]
        got = sum(Decimal(r["商家实收（元）"]) for r in trades)
        back = sum(Decimal(r["商家实收（元）"]) for r in refunds)
        lines += [
            "#-----------------------------------------业务明细列表结束------------------------------------",
            f"#交易合计：{len(trades)}笔，商家实收共{got:.2f}元，商家优惠共0.00元",
            f"#退款合计：{len(refunds)}笔，商家实收退款共{back:.2f}元，商家优惠退款共0.00元",
            f"#导出时间：[{compact[:4]}年{compact[4:6]}月{compact[6:]}日 10:23:11]",
        ]
        return "\r\n".join(lines) + "\r\n"

    def csv_bytes(self, encoding: str = "gbk") -> bytes:
        return self.text().encode(encoding)

    def zip_bytes(self) -> bytes:
        """The zip as Alipay serves it: GBK member names without the UTF-8 flag, GBK contents."""
        stem = f"{AP_PID}_{self.day.replace('-', '')}"
        detail, summary = f"{stem}_业务明细.csv", f"{stem}_业务明细(汇总).csv"
        summary_text = (
            "#支付宝业务汇总查询\r\n#账号：[" + AP_PID + "]\r\n"
            "门店编号,门店名称,交易订单总笔数,退款订单总笔数,订单金额（元）,商家实收（元）,备注\r\n"
            "BM001\t,巴马特产店\t,1\t,0\t,0.10\t,0.10\t,\t\r\n#导出时间：[x]\r\n"
        )
        buf = io.BytesIO()
        placeholders: dict[bytes, bytes] = {}
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for i, (name, content) in enumerate(((detail, self.text()), (summary, summary_text))):
                raw = name.encode("gbk")
                ascii_name = f"m{i}".ljust(len(raw), "_")
                placeholders[ascii_name.encode()] = raw
                zf.writestr(ascii_name, content.encode("gbk"))
        data = buf.getvalue()
        for placeholder, gbk_name in placeholders.items():
            data = data.replace(placeholder, gbk_name)
        return data
