// The status bar item: who the Jupyter server is signed in to MLflow as, until when, and whether all is well.

import { Widget } from '@lumino/widgets';

import { mlflowIcon } from './icon';

/** Countdowns move on between status changes: redraw this often (ms). */
const REDRAW = 15000;

export class StatusItem extends Widget {
  constructor(status, onClick) {
    super();
    this.status = status;
    this.addClass('jp-mlflow-oidc-status');
    this.node.setAttribute('role', 'button');
    this.node.style.display = 'flex';
    this.node.style.alignItems = 'center';
    this.node.style.gap = '4px';
    this.node.style.padding = '0 6px';
    this.node.style.cursor = 'pointer';
    const icon = document.createElement('span');
    mlflowIcon.element({ container: icon, height: '14px', width: '14px', elementPosition: 'center' });
    this._text = document.createElement('span');
    this.node.append(icon, this._text);
    this.node.addEventListener('click', onClick);
    status.changed.connect(this.render, this);
    this._timer = setInterval(() => this.render(), REDRAW);
    this.render();
  }

  render() {
    const s = this.status.current;
    const state = s ? (s.signed_in ? s.state : s.state || 'signed_out') : 'unknown';
    this.node.dataset.state = state;
    this._text.textContent = `MLflow: ${this.status.summary()}`;
    const trouble = ['refresh_failing', 'provider_unreachable', 'login_required'].includes(state);
    this.node.style.color = trouble ? 'var(--jp-warn-color0, #b26b00)' : '';
    this.node.title = this.status.rows().map(([k, v]) => `${k}: ${v}`).join('\n') + '\n(click for details)';
  }

  dispose() {
    clearInterval(this._timer);
    this.status.changed.disconnect(this.render, this);
    super.dispose();
  }
}
