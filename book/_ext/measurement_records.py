"""``{dscourse-records}``: the appendix's list of measurement records, drawn from ``dscourse.records`` when the book
is built (each file's device, date, versions and commands come from the file itself, so the page cannot go stale).

    :::{dscourse-records}
    :::

One bullet list per book section; each item names the file, says what it holds, where and when it was measured,
and the command that wrote it (the first one, and how many more).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


class DscourseRecords(SphinxDirective):
    has_content = False

    def run(self):
        from dscourse.records import RecordError, records

        try:
            rows = records()
        except RecordError as e:
            raise self.error(f"dscourse-records: {e}") from None
        out = []
        for section in dict.fromkeys(r["section"] for r in rows):
            para = nodes.paragraph()
            para += nodes.strong(text=f"{section} 节")
            out.append(para)
            items = nodes.bullet_list()
            for r in (r for r in rows if r["section"] == section):
                item = nodes.list_item()
                head = nodes.paragraph()
                head += nodes.literal(text=r["file"])
                head += nodes.Text(f"：{r['what']}。{r['device']}，{r['date']}，{r['versions']}。")
                item += head
                if r["commands"]:
                    cmd = nodes.paragraph()
                    cmd += nodes.Text("命令：")
                    cmd += nodes.literal(text=r["commands"][0])
                    if len(r["commands"]) > 1:
                        cmd += nodes.Text(f"（另有 {len(r['commands']) - 1} 条，见文件的 provenance）")
                    item += cmd
                items += item
            out.append(items)
        return out


def setup(app):
    app.add_directive("dscourse-records", DscourseRecords)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
