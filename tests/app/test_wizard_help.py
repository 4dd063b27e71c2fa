"""The wizard explains every field, names the paper's knobs in plain words, has a method help page,
keeps the user's class choices through remapping and says why Next is greyed out."""
from __future__ import annotations

from PySide6.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QTableWidget, QWidget

from app.help import MethodHelp
from app.widgets import PathField


def open_wizard(qtbot, window):
    wizard = window.train_page.wizard
    with qtbot.waitSignal(wizard.page_data.inspected, timeout=30000):
        window.show_page("Train")
    return wizard


def explained(widget, page) -> bool:
    """The widget, or the field it belongs to, has a tooltip."""
    while widget is not None and widget is not page:
        if widget.toolTip():
            return True
        widget = widget.parentWidget()
    return False


def test_every_wizard_field_has_a_tooltip_and_a_help_line(qtbot, window):
    wizard = open_wizard(qtbot, window)
    field_types = (QLineEdit, QAbstractSpinBox, QComboBox, QAbstractButton, PathField, QTableWidget)
    for number, page in enumerate(wizard.pages):
        if number:
            assert wizard.next(), f"could not leave page {wizard.pages[number - 1].title()}"
        fields = [widget for widget in page.findChildren(QWidget)
                  if isinstance(widget, field_types) and not isinstance(widget.parentWidget(), (PathField, QAbstractSpinBox))
                  and widget.objectName() != "qt_spinbox_lineedit"]
        unexplained = [f"{type(widget).__name__} {getattr(widget, 'text', lambda: '')()!r}"
                       for widget in fields if not explained(widget, page) and widget.isVisibleTo(page)]
        if page is wizard.page_review:
            continue  # the review shows the TOML; its only field is read-only text
        assert not unexplained, f"{page.title()}: fields without help: {unexplained}"
        help_lines = [label for label in page.findChildren(type(window.job_label)) if label.objectName() == "fieldHelp"]
        assert help_lines, f"{page.title()} has no help lines"
    distill = wizard.page_distill
    assert distill.lambda1.toolTip().startswith("<b>Distillation weight (λ1)</b>")
    assert "Re-matching temperature (γ)" in distill.gamma.toolTip()
    assert distill.ssm_check.text() == "Initial matching (SSM)"


def test_the_method_help_opens_from_the_wizard_and_the_help_menu(qtbot, window):
    wizard = open_wizard(qtbot, window)
    wizard.help_button.click()
    help_window = window.findChild(MethodHelp)
    assert help_window is not None and help_window.isVisible()
    text = help_window.browser.toPlainText()
    assert "What SemBridge does" in text and "AAAI 2026" in text and "Dynamic re-matching (DynM)" in text
    help_window.close()
    window.method_help_action.trigger()
    assert help_window.isVisible() and window.findChildren(MethodHelp) == [help_window]


def test_classes_stay_ticked_through_a_mapping_and_back_and_next_says_why_it_is_off(qtbot, window):
    wizard = open_wizard(qtbot, window)
    wizard.next()
    classes = wizard.page_classes
    river = next(row for row in range(classes.mapping_table.rowCount())
                 if classes.mapping_table.item(row, 0).text() == "River")
    combo = classes.mapping_table.cellWidget(river, 1)
    combo.setCurrentIndex(combo.findData("Forest"))
    assert "River" not in classes.checked_classes()
    combo.setCurrentIndex(combo.findData(""))
    assert "River" in classes.checked_classes(), "undoing the mapping brings River back ticked"
    assert "learn 6 classes" in classes.chosen_label.text()

    classes.set_checked({"Forest"})
    assert not wizard.next_button.isEnabled()
    assert "at least two classes" in wizard.reason_label.text() and "1 ticked" in wizard.reason_label.text()
    classes.set_checked({"Forest", "River"})
    assert wizard.next_button.isEnabled() and not wizard.reason_label.text()


def test_stages_the_run_will_not_train_are_not_editable(qtbot, window, trained_run):
    wizard = open_wizard(qtbot, window)
    wizard.next()
    wizard.next()
    models = wizard.page_models
    models.reuse_check.setChecked(True)
    models.reuse_field.set_path(trained_run)
    models.cache_check.setChecked(False)
    wizard.next()
    wizard.next()
    training = wizard.page_training
    assert not training.epochs["teacher"].isEnabled() and not training.epochs["matcher"].isEnabled()
    assert training.stage_notes["teacher"].text() == f"reused from {trained_run.name}"
    assert training.epochs["student"].isEnabled()
    assert wizard.config.student.use_teacher_cache is False

    wizard.back()
    wizard.back()
    assert wizard.currentPage() is models
    models.reuse_check.setChecked(False)
    wizard.next()
    distill = wizard.page_distill
    distill.set_loss("none")
    distill.ot1_check.setChecked(False)
    distill.ot2_check.setChecked(False)
    assert not distill.ssm_check.isEnabled() and not distill.lambda1.isEnabled()
    wizard.next()
    assert training.stage_notes["teacher"].text() == "not used by this run"
    assert not training.epochs["matcher"].isEnabled()
