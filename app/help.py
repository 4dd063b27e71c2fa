"""The in-app help page on the method: what SemBridge does, in plain words, and what each of its
settings means (the glossary is built from the config's SettingSpecs, the wizard's own texts)."""
from __future__ import annotations

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout, QWidget

from app.setting_fields import spec_text

METHOD_HTML = """
<h2>What SemBridge does</h2>
<p>You have two archives that were never taken together: <b>multispectral (MS) tiles</b> (for example
Sentinel-2, 13 bands) and <b>RGB images</b> from other places, dates and sensors. Both are sorted into
the same classes. SemBridge trains a classifier for the RGB images that learns not only from their
labels but also from what a classifier of the MS tiles knows, although no RGB image shows the same
place as any MS tile.</p>
<ol>
<li><b>Teacher.</b> A network learns the classes from the MS tiles, with all their bands.</li>
<li><b>Matcher.</b> A second network learns to tell which MS tile a pseudo-RGB picture (three of its
own bands) was cut from; afterwards it can say how similar any RGB image is to any MS tile.</li>
<li><b>Initial matching (SSM).</b> Each RGB image gets a teacher tile: the most similar MS tile of
its own class.</li>
<li><b>Student.</b> The RGB network learns from the labels and imitates the teacher's prediction on
its matched tile (the distillation term, weight λ1); two alignment terms (L_ot1, L_ot2) bring its
features closer to the teacher's (weight λ2 = 1 − λ1).</li>
<li><b>Dynamic re-matching (DynM).</b> At a few scheduled epochs each RGB image picks a new teacher:
the MS tile of its class whose predictions are now closest to its own.</li>
</ol>
<p>Only the student is kept: the exported model classifies RGB images and labels RGB maps. To see
what distillation brings, train the same settings once with the distillation loss <i>none</i> and
both alignment terms off (a plain RGB baseline) and compare the two runs in <i>Projects &amp; runs</i>.
The <i>Teachers</i> tab of a finished run shows which MS tiles taught which RGB image.</p>
<p><b>Reference:</b> SemBridge, asymmetric cross-modal knowledge distillation (AAAI 2026; the arXiv
version with its appendix gives the equations). Where the paper leaves a choice open, the decision
taken here is described in the project's <code>docs/method.md</code>.</p>
"""

GLOSSARY_KEYS = ("distill.loss", "distill.lambda1", "distill.ssm", "distill.dynm", "distill.e0", "distill.delta_e",
                 "distill.e_mu", "distill.gamma", "distill.ot1", "distill.ot2", "distill.heads", "distill.pssm",
                 "matcher.temperature", "data.band_preset", "student.use_teacher_cache")


def method_html() -> str:
    rows = "".join(f"<tr><td valign='top'><b>{label}</b></td><td>{help_text}</td></tr>"
                   for label, help_text in map(spec_text, GLOSSARY_KEYS))
    return METHOD_HTML + f"<h3>The settings, one line each</h3><table cellspacing='4'>{rows}</table>"


class MethodHelp(QDialog):
    """A non-modal window, so the help stays open beside the wizard."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("SemBridge: how the method works")
        self.setObjectName("methodHelp")
        self.browser = QTextBrowser()
        self.browser.setOpenExternalLinks(True)
        self.browser.setHtml(method_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(self.browser)
        layout.addWidget(buttons)
        self.resize(720, 640)


def show_method_help(parent: QWidget) -> MethodHelp:
    """Open (or raise) the method help window of ``parent``'s top-level window."""
    owner = parent.window()
    window = owner.findChild(MethodHelp)
    if window is None:
        window = MethodHelp(owner)
    window.show()
    window.raise_()
    window.activateWindow()
    return window
