// JupyterLab launcher card, Help menu and command palette entries for the MLflow UI at `<base_url>mlflow/`,
// which the mlflow-oidc-jupyter server extension serves with the user's OpenID Connect sign-in.

import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { ICommandPalette, IFrame, MainAreaWidget } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

const PLUGIN_ID = 'mlflow-oidc-jupyter:plugin';
const OPEN = 'mlflow-oidc:open';
const OPEN_INSIDE = 'mlflow-oidc:open-in-jupyterlab';

const mlflowIcon = new LabIcon({
  name: 'mlflow-oidc:mlflow',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#0194E2" d="M12 2a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 2.2a7.8 7.8 0 0 1 6.6 ' +
    '12L15 11.6l-3 3.6-3.4-5.3-3.1 5A7.8 7.8 0 0 1 12 4.2z"/></svg>'
});

/** The MLflow UI's URL on this server; the trailing slash matters (the UI uses relative URLs). */
function mlflowUrl() {
  return URLExt.join(PageConfig.getBaseUrl(), 'mlflow/');
}

function openInJupyterLab(app) {
  const frame = new IFrame({
    sandbox: ['allow-same-origin', 'allow-scripts', 'allow-forms', 'allow-popups', 'allow-downloads', 'allow-modals']
  });
  frame.url = mlflowUrl();
  const widget = new MainAreaWidget({ content: frame });
  widget.id = `mlflow-oidc-${Date.now()}`;
  widget.title.label = 'MLflow';
  widget.title.icon = mlflowIcon;
  widget.title.closable = true;
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
}

const plugin = {
  id: PLUGIN_ID,
  description: 'Open the MLflow UI from the launcher, the Help menu and the command palette.',
  autoStart: true,
  optional: [ILauncher, IMainMenu, ICommandPalette, ISettingRegistry],
  activate: (app, launcher, mainMenu, palette, settingRegistry) => {
    let openIn = 'browser-tab';
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

    app.commands.addCommand(OPEN, {
      label: 'MLflow',
      caption: 'Open the MLflow UI (signed in with your organisation account)',
      icon: mlflowIcon,
      execute: () => {
        if (openIn === 'jupyterlab') {
          openInJupyterLab(app);
        } else {
          window.open(mlflowUrl(), '_blank');
        }
      }
    });
    app.commands.addCommand(OPEN_INSIDE, {
      label: 'MLflow (inside JupyterLab)',
      caption: 'Open the MLflow UI in a JupyterLab tab',
      icon: mlflowIcon,
      execute: () => openInJupyterLab(app)
    });

    if (launcher) {
      launcher.add({ command: OPEN, category: 'Other', rank: 0 });
    }
    if (mainMenu) {
      mainMenu.helpMenu.addGroup([{ command: OPEN }, { command: OPEN_INSIDE }], 0);
    }
    if (palette) {
      palette.addItem({ command: OPEN, category: 'MLflow' });
      palette.addItem({ command: OPEN_INSIDE, category: 'MLflow' });
    }
  }
};

export default plugin;
