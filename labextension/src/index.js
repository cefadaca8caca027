// JupyterLab side of mlflow-oidc-jupyter: the MLflow launcher card, Help menu and palette entries, sign-in and
// sign-out commands, and a status bar item showing the Jupyter server's MLflow sign-in.

import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { Dialog, ICommandPalette, IFrame, MainAreaWidget, showDialog } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import { oauthUrl, signInUrl, signOut, uiPath } from './api';
import { mlflowIcon } from './icon';
import { SessionStatus } from './status';
import { StatusItem } from './statusbar';

const PLUGIN_ID = 'mlflow-oidc-jupyter:plugin';
const OPEN = 'mlflow-oidc:open';
const OPEN_INSIDE = 'mlflow-oidc:open-in-jupyterlab';
const SIGN_IN = 'mlflow-oidc:sign-in';
const SIGN_OUT = 'mlflow-oidc:sign-out';
const STATUS = 'mlflow-oidc:status';

/** What the server's sign-in covers, said wherever one signs in or out. */
const SCOPE = 'the MLflow UI and every notebook on this Jupyter server that uses its sign-in';

function openInJupyterLab(app) {
  const frame = new IFrame({
    sandbox: ['allow-same-origin', 'allow-scripts', 'allow-forms', 'allow-popups', 'allow-downloads', 'allow-modals']
  });
  frame.url = uiPath();
  const widget = new MainAreaWidget({ content: frame });
  widget.id = `mlflow-oidc-${Date.now()}`;
  widget.title.label = 'MLflow';
  widget.title.icon = mlflowIcon;
  widget.title.closable = true;
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
}

/** A dialog body: a table of (label, value) rows and an optional paragraph. */
function table(rows, note) {
  const node = document.createElement('div');
  node.className = 'jp-mlflow-oidc-dialog';
  const tbl = document.createElement('table');
  for (const [label, value] of rows) {
    const tr = tbl.insertRow();
    const th = document.createElement('th');
    th.textContent = label;
    th.style.textAlign = 'left';
    th.style.paddingRight = '1em';
    th.style.verticalAlign = 'top';
    tr.append(th);
    tr.insertCell().textContent = value;
  }
  node.append(tbl);
  if (note) {
    const p = document.createElement('p');
    p.textContent = note;
    node.append(p);
  }
  return new Widget({ node });
}

const plugin = {
  id: PLUGIN_ID,
  description: 'MLflow UI launcher card, menus, sign-in commands and status bar item.',
  autoStart: true,
  optional: [ILauncher, IMainMenu, ICommandPalette, ISettingRegistry, IStatusBar],
  activate: (app, launcher, mainMenu, palette, settingRegistry, statusBar) => {
    let openIn = 'browser-tab';
    let openInsideWhenSignedIn = false;
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const update = () => {
            openIn = settings.get('openIn').composite;
          };
          update();
          settings.changed.connect(update);
        })
        .catch(reason => console.warn('mlflow-oidc-jupyter: settings not loaded', reason));
    }

    const status = new SessionStatus();
    status.run();
    status.changed.connect(() => {
      app.commands.notifyCommandChanged();
      if (openInsideWhenSignedIn && status.signedIn) {
        openInsideWhenSignedIn = false;
        openInJupyterLab(app);
      }
    });

    const openInside = () => {
      if (status.current && !status.signedIn) {
        // The provider's pages may refuse to be framed: sign in in a browser tab, then open the Lab tab.
        openInsideWhenSignedIn = true;
        window.open(signInUrl(oauthUrl('status')), '_blank');
      } else {
        openInJupyterLab(app);
      }
    };

    app.commands.addCommand(OPEN, {
      label: 'MLflow',
      caption: 'Open the MLflow UI (signs you in first when needed)',
      icon: mlflowIcon,
      execute: () => {
        if (openIn === 'jupyterlab') {
          openInside();
        } else {
          // Straight to the provider when signed out, straight to the UI when signed in: no page between.
          window.open(signInUrl(uiPath(), { reuse: true }), '_blank');
        }
      }
    });
    app.commands.addCommand(OPEN_INSIDE, {
      label: 'MLflow (inside JupyterLab)',
      caption: 'Open the MLflow UI in a JupyterLab tab',
      icon: mlflowIcon,
      execute: openInside
    });
    app.commands.addCommand(SIGN_IN, {
      label: () => (status.signedIn ? 'Sign in to MLflow again' : 'Sign in to MLflow'),
      caption: `Sign the Jupyter server in to MLflow (for ${SCOPE})`,
      icon: mlflowIcon,
      execute: () => {
        window.open(signInUrl(oauthUrl('status')), '_blank');
      }
    });
    app.commands.addCommand(SIGN_OUT, {
      label: 'Sign out of MLflow',
      caption: `Sign the Jupyter server out of MLflow (ends it for ${SCOPE})`,
      icon: mlflowIcon,
      isEnabled: () => status.signedIn,
      execute: async () => {
        const who = status.current && status.current.username;
        const answer = await showDialog({
          title: 'Sign out of MLflow?',
          body:
            `This ends ${who ? `${who}'s` : 'the'} MLflow sign-in of this Jupyter server: ${SCOPE} ` +
            'will need a new sign-in. Notebooks signed in on their own (%mlflow_login --new) keep theirs.',
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Sign out' })]
        });
        if (!answer.button.accept) {
          return;
        }
        let result;
        try {
          result = await signOut();
        } catch (reason) {
          await showDialog({ title: 'Sign-out failed', body: String(reason), buttons: [Dialog.okButton()] });
          return;
        }
        await status.refresh();
        const buttons = [Dialog.okButton({ label: 'Close' })];
        if (result.end_session_url) {
          buttons.unshift(Dialog.createButton({ label: 'Also sign out at the identity provider' }));
        }
        const done = await showDialog({
          title: 'Signed out of MLflow',
          body: `The Jupyter server no longer holds an MLflow sign-in: ${SCOPE} must sign in again.`,
          buttons
        });
        if (result.end_session_url && done.button.label === 'Also sign out at the identity provider') {
          window.open(result.end_session_url, '_blank');
        }
      }
    });
    app.commands.addCommand(STATUS, {
      label: 'MLflow sign-in status',
      caption: "Who the Jupyter server is signed in to MLflow as, and until when",
      icon: mlflowIcon,
      execute: async () => {
        await status.refresh();
        const signedIn = status.signedIn;
        const action = signedIn ? Dialog.warnButton({ label: 'Sign out' }) : Dialog.okButton({ label: 'Sign in' });
        const answer = await showDialog({
          title: 'MLflow sign-in',
          body: table(status.rows()),
          buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.createButton({ label: 'Open MLflow' }), action]
        });
        if (answer.button.label === 'Open MLflow') {
          await app.commands.execute(OPEN);
        } else if (answer.button.label === 'Sign in') {
          await app.commands.execute(SIGN_IN);
        } else if (answer.button.label === 'Sign out') {
          await app.commands.execute(SIGN_OUT);
        }
      }
    });

    if (launcher) {
      launcher.add({ command: OPEN, category: 'Other', rank: 0 });
    }
    if (mainMenu) {
      mainMenu.helpMenu.addGroup([{ command: OPEN }, { command: OPEN_INSIDE }], 0);
    }
    if (palette) {
      for (const command of [OPEN, OPEN_INSIDE, SIGN_IN, SIGN_OUT, STATUS]) {
        palette.addItem({ command, category: 'MLflow' });
      }
    }
    if (statusBar) {
      const item = new StatusItem(status, () => app.commands.execute(STATUS));
      statusBar.registerStatusItem('mlflow-oidc-jupyter:status', {
        item,
        align: 'left',
        rank: 50,
        isActive: () => true
      });
    }
  }
};

export default plugin;
